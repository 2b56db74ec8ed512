// The official Stripe Node library writing and reading through Tributary's
// Stripe-compatible path. stripe-node has no base path option, so its HTTP
// client is wrapped to put the path prefix in front of each request path;
// everything else is the library as shipped, and the key is an app token.
//
// Usage: node stripe_through.cjs BASE TOKEN   (BASE: http://127.0.0.1:PORT/stripe/SOURCE)
// Prints one JSON line, {"created": id, "listed": n}; exits non-zero on any mismatch.
const assert = require('node:assert/strict');
const Stripe = require('stripe');

const [base, token] = process.argv.slice(2);
const url = new URL(base);
const prefix = url.pathname.replace(/\/$/, '');

class PrefixedHttpClient extends Stripe.HttpClient {
  constructor() {
    super();
    this.inner = Stripe.createNodeHttpClient();
  }
  getClientName() {
    return 'node-prefixed';
  }
  makeRequest(host, port, path, ...rest) {
    return this.inner.makeRequest(host, port, prefix + path, ...rest);
  }
}

function client(key) {
  return new Stripe(key, {
    host: url.hostname,
    port: url.port,
    protocol: url.protocol.replace(':', ''),
    httpClient: new PrefixedHttpClient(),
    maxNetworkRetries: 0,
    telemetry: false,
  });
}

async function main() {
  const stripe = client(token);
  const params = { email: 'node@example.com', name: 'Node Through', metadata: { plan: 'pro' } };
  const created = await stripe.customers.create(params, { idempotencyKey: 'node-through-1' });
  assert.match(created.id, /^cus_/);
  assert.equal(created.metadata.plan, 'pro');
  const replayed = await stripe.customers.create(params, { idempotencyKey: 'node-through-1' });
  assert.equal(replayed.id, created.id);
  assert.equal(replayed.lastResponse.headers['idempotent-replayed'], 'true');
  await assert.rejects(
    stripe.customers.create({ email: 'other@example.com' }, { idempotencyKey: 'node-through-1' }),
    (e) => e instanceof Stripe.errors.StripeIdempotencyError,
  );

  const updated = await stripe.customers.update(created.id, { name: 'Node Renamed', metadata: { tier: 'gold' } });
  assert.equal(updated.name, 'Node Renamed');
  const fetched = await stripe.customers.retrieve(created.id);
  assert.equal(fetched.name, 'Node Renamed');
  assert.equal(fetched.metadata.tier, 'gold');

  const listed = await stripe.customers.list({ limit: 7 }).autoPagingToArray({ limit: 10000 });
  const ids = listed.map((c) => c.id);
  assert.ok(ids.includes(created.id));
  assert.equal(new Set(ids).size, ids.length);
  const stamps = listed.map((c) => c.created);
  assert.deepEqual(stamps, [...stamps].sort((a, b) => b - a), 'not newest first');

  const deleted = await stripe.customers.del(created.id);
  assert.equal(deleted.deleted, true);
  await assert.rejects(stripe.customers.retrieve(created.id), (e) => e.statusCode === 404 && e.code === 'resource_missing');
  await assert.rejects(client('trb_wrong').customers.retrieve(created.id), (e) => e instanceof Stripe.errors.StripeAuthenticationError);

  console.log(JSON.stringify({ created: created.id, listed: ids.length }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
