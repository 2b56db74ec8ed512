"""The official Stripe Python library over every resource type of
resources.json against the simulator: create, retrieve, update, list with
auto-pagination and delete (or cancel) each, as Stripe allows.

Usage: python3 stripe_resources.py http://127.0.0.1:PORT
Prints one JSON line, {"types": {path: [operations]}}; exits non-zero (with a
traceback) on any mismatch.
"""
import json
import os
import sys

import stripe

base = sys.argv[1]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "resources.json")) as f:
    spec = json.load(f)
client = stripe.StripeClient("sk_test_official_resources", base_addresses={"api": base}, max_network_retries=0)


def service(dotted):
    found = client.v1
    for part in dotted.split("."):
        found = getattr(found, part)
    return found


def resolve(value, memo):
    """Replace each "$PATH" with the id of the newest object of that list."""
    if isinstance(value, str) and value.startswith("$"):
        path = value[1:]
        if path not in memo:
            memo[path] = service(spec["lookups"][path]["python"]).list(params={"limit": 1}).data[0].id
        return memo[path]
    if isinstance(value, dict):
        return {k: resolve(v, memo) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, memo) for v in value]
    return value


def agrees(sent, got):
    """Whether an answer shows what was sent: a reference may come back
    expanded, a list of items as a list object."""
    if isinstance(sent, dict):
        return isinstance(got, dict) and all(agrees(v, got.get(k)) for k, v in sent.items())
    if isinstance(sent, list):
        items = got.get("data") if isinstance(got, dict) else got
        return isinstance(items, list) and len(items) == len(sent) and all(agrees(s, g) for s, g in zip(sent, items))
    if isinstance(got, dict) and "id" in got:
        return got["id"] == sent
    return got == sent


def walk(svc, args, params):
    listed = list(svc.list(*args, params=params).auto_paging_iter())
    ids = [o.id for o in listed]
    assert len(ids) == len(set(ids)), f"an id listed twice: {ids}"
    stamps = [o.to_dict().get("created") for o in listed]
    stamps = [s for s in stamps if s is not None]
    assert stamps == sorted(stamps, reverse=True), "not newest first"
    return ids


def exercise(case):
    memo = {}
    svc = service(case["python"])
    args = (resolve(case["parent"], memo),) if "parent" in case else ()
    done = []

    params = resolve(case["create"], memo)
    created = svc.create(*args, params=params)
    assert created.object == case["object"], created.object
    assert agrees(params, created.to_dict()), (params, created)
    done.append("create")

    fetched = svc.retrieve(*args, created.id)
    assert fetched.to_dict() == created.to_dict(), (fetched, created)
    done.append("retrieve")

    if "update" in case:
        changes = resolve(case["update"], memo)
        updated = svc.update(*args, created.id, params=changes)
        assert updated.id == created.id and agrees(changes, updated.to_dict()), (changes, updated)
        assert agrees(changes, svc.retrieve(*args, created.id).to_dict())
        done.append("update")

    filters = {"limit": 3, **resolve(case.get("filter", {}), memo)}
    ids = walk(svc, args, filters)
    assert ids[0] == created.id, f"the new object is not listed first: {ids[:3]}"
    done.append("list")

    if case.get("delete") == "del":
        gone = svc.delete(*args, created.id)
        assert gone.id == created.id and gone.deleted is True, gone
        assert created.id not in walk(svc, args, filters), "a deleted object is still listed"
        done.append("delete")
    elif case.get("delete") == "cancel":
        canceled = svc.cancel(*args, created.id)
        assert canceled.id == created.id and canceled.status == "canceled", canceled
        assert svc.retrieve(*args, created.id).status == "canceled"
        done.append("cancel")
    return done


types = {}
for case in spec["resources"]:
    try:
        types[case["path"]] = exercise(case)
    except Exception as e:
        raise AssertionError(f"{case['path']}: {e!r}") from e
print(json.dumps({"types": types}))
