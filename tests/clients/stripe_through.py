"""The official Stripe Python library writing and reading through Tributary's
Stripe-compatible path: only the base URL differs, and the key is an app token.

Usage: python3 stripe_through.py BASE TOKEN   (BASE: http://127.0.0.1:PORT/stripe/SOURCE)
Prints one JSON line, {"created": id, "listed": n}; exits non-zero on any mismatch.
"""
import json
import sys

import stripe

base, token = sys.argv[1], sys.argv[2]
client = stripe.StripeClient(token, base_addresses={"api": base}, max_network_retries=0)

# create with a key; the same key replays the first answer
params = {"email": "python@example.com", "name": "Python Through", "metadata": {"plan": "pro"}}
created = client.v1.customers.create(params=params, options={"idempotency_key": "python-through-1"})
assert created.id.startswith("cus_"), created.id
assert created.metadata["plan"] == "pro"
assert created.last_response.headers.get("Idempotent-Replayed") is None
replayed = client.v1.customers.create(params=params, options={"idempotency_key": "python-through-1"})
assert replayed.id == created.id, (replayed.id, created.id)
assert replayed.last_response.headers.get("Idempotent-Replayed") == "true"
try:
    client.v1.customers.create(params={"email": "other@example.com"}, options={"idempotency_key": "python-through-1"})
    raise AssertionError("a key reused with other parameters must fail")
except stripe.IdempotencyError:
    pass

# update (the client keys it itself), then read it back from the mirror at once
updated = client.v1.customers.update(created.id, params={"name": "Python Renamed", "metadata": {"tier": "gold"}})
assert updated.name == "Python Renamed" and updated.metadata["tier"] == "gold"
fetched = client.v1.customers.retrieve(created.id)
assert fetched.name == "Python Renamed" and fetched.metadata["plan"] == "pro", fetched

# auto-pagination over the mirror, newest first
listed = [c for c in client.v1.customers.list(params={"limit": 7}).auto_paging_iter()]
ids = [c.id for c in listed]
assert created.id in ids and len(ids) == len(set(ids)), len(ids)
stamps = [c.created for c in listed]
assert stamps == sorted(stamps, reverse=True), "not newest first"

# delete; the mirror no longer has it
deleted = client.v1.customers.delete(created.id)
assert deleted.deleted is True and deleted.id == created.id
try:
    client.v1.customers.retrieve(created.id)
    raise AssertionError("a deleted customer was still retrieved")
except stripe.InvalidRequestError as e:
    assert e.http_status == 404 and e.code == "resource_missing", (e.http_status, e.code)

# deeper paths: a child list's writes and reads under its parent, and a
# list whose path has two segments
owner, other = client.v1.customers.list(params={"limit": 2}).data
tax_id = client.v1.customers.tax_ids.create(owner.id, params={"type": "eu_vat", "value": "DE123456789"})
assert tax_id.id.startswith("txi_") and tax_id.customer == owner.id, tax_id
again = client.v1.customers.tax_ids.retrieve(owner.id, tax_id.id)
assert again.id == tax_id.id and again.value == "DE123456789", again
try:
    client.v1.customers.tax_ids.retrieve(other.id, tax_id.id)
    raise AssertionError("a tax id was found under another customer")
except stripe.InvalidRequestError as e:
    assert e.http_status == 404 and e.code == "resource_missing", (e.http_status, e.code)
removed = client.v1.customers.tax_ids.delete(owner.id, tax_id.id)
assert removed.deleted is True and removed.id == tax_id.id, removed
sessions = client.v1.checkout.sessions.list(params={"limit": 2})
assert sessions.object == "list" and len(sessions.data) == 2, sessions
assert sessions.data[0].created >= sessions.data[1].created
session = client.v1.checkout.sessions.retrieve(sessions.data[1].id)
assert session.id == sessions.data[1].id and session.object == "checkout.session", session

# a wrong token is Stripe's authentication error
try:
    stripe.StripeClient("trb_wrong", base_addresses={"api": base}, max_network_retries=0).v1.customers.retrieve(created.id)
    raise AssertionError("a wrong token was accepted")
except stripe.AuthenticationError:
    pass

print(json.dumps({"created": created.id, "listed": len(ids)}))
