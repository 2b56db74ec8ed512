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

# a wrong token is Stripe's authentication error
try:
    stripe.StripeClient("trb_wrong", base_addresses={"api": base}, max_network_retries=0).v1.customers.retrieve(created.id)
    raise AssertionError("a wrong token was accepted")
except stripe.AuthenticationError:
    pass

print(json.dumps({"created": created.id, "listed": len(ids)}))
