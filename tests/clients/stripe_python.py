"""The official Stripe Python library against the simulator: only the base URL differs.

Usage: python3 stripe_python.py http://127.0.0.1:PORT
Exits non-zero (with a traceback) on any mismatch.
"""
import sys

import stripe

base = sys.argv[1]
client = stripe.StripeClient("sk_test_official_client", base_addresses={"api": base}, max_network_retries=0)

# create (form-encoded, nested metadata), retrieve, update, list, delete
customer = client.v1.customers.create(params={"email": "lib@example.com", "name": "Library User", "metadata": {"plan": "pro"}})
assert customer.id.startswith("cus_"), customer.id
assert customer.metadata["plan"] == "pro"
fetched = client.v1.customers.retrieve(customer.id)
assert fetched.email == "lib@example.com"
updated = client.v1.customers.update(customer.id, params={"name": "Renamed", "metadata": {"tier": "gold"}})
assert updated.name == "Renamed" and updated.metadata["plan"] == "pro" and updated.metadata["tier"] == "gold"

# auto-pagination walks every page with starting_after
page = client.v1.customers.list(params={"limit": 100})
ids = [c.id for c in page.auto_paging_iter()]
assert customer.id in ids and len(ids) == len(set(ids)), len(ids)

# nested lists: an invoice's lines beyond the first ten
invoices = [i for i in client.v1.invoices.list(params={"limit": 100}).auto_paging_iter()]
big = next(i for i in invoices if i.lines.has_more)
lines = list(client.v1.invoices.line_items.list(big.id, params={"limit": 5}).auto_paging_iter())
assert len(lines) > 10, len(lines)

# events: newest first, with previous_attributes on updates
events = client.v1.events.list(params={"limit": 5})
assert events.data[0].type == "customer.updated", events.data[0].type
assert events.data[0].data.previous_attributes["name"] == "Library User"

# idempotency: the same key replays the first response
first = client.v1.customers.create(params={"email": "idem@example.com"}, options={"idempotency_key": "k-1"})
second = client.v1.customers.create(params={"email": "idem@example.com"}, options={"idempotency_key": "k-1"})
assert first.id == second.id
try:
    client.v1.customers.create(params={"email": "other@example.com"}, options={"idempotency_key": "k-1"})
    raise AssertionError("reusing a key with other params must fail")
except stripe.IdempotencyError:
    pass

# expand[]: references on a list page and on one object, and a list a
# customer shows only when asked
invoices = client.v1.invoices.list(params={"limit": 20, "expand": ["data.customer"]})
linked = [i for i in invoices.data if i.customer is not None]
assert linked and all(c.customer.object == "customer" for c in linked), [i.customer for i in invoices.data]
one = client.v1.invoices.retrieve(linked[0].id, params={"expand": ["customer"]})
assert one.customer.id == linked[0].customer.id
with_tax_ids = client.v1.customers.retrieve(customer.id, params={"expand": ["tax_ids"]})
assert with_tax_ids.tax_ids.object == "list", with_tax_ids
assert "tax_ids" not in client.v1.customers.retrieve(customer.id).to_dict()
try:
    client.v1.customers.list(params={"expand": ["email"]})
    raise AssertionError("a list expands data.<field> only")
except stripe.InvalidRequestError as e:
    assert e.param == "expand", e.param

# connected accounts and errors
accounts = client.v1.accounts.list()
assert len(accounts.data) >= 1
scoped = client.v1.customers.list(params={"limit": 3}, options={"stripe_account": accounts.data[0].id})
assert all(c.id not in ids for c in scoped.data)
deleted = client.v1.customers.delete(customer.id)
assert deleted.deleted is True
try:
    client.v1.customers.retrieve(customer.id)
    raise AssertionError("a deleted customer must be gone")
except stripe.InvalidRequestError as e:
    assert e.code == "resource_missing", e.code
try:
    stripe.StripeClient("not_a_key", base_addresses={"api": base}).v1.customers.list()
    raise AssertionError("a bad key must be refused")
except stripe.AuthenticationError:
    pass
print("official stripe client: ok")
