// The official Stripe Node library over every resource type of
// resources.json against the simulator: create, retrieve, update, list with
// auto-pagination and delete (or cancel) each, as Stripe allows.
//
// Usage: node stripe_resources.cjs http://127.0.0.1:PORT
// Prints one JSON line, {"types": {path: [operations]}}; exits non-zero on any mismatch.
const assert = require('node:assert/strict');
const path = require('node:path');
const Stripe = require('stripe');
const spec = require(path.join(__dirname, 'resources.json'));

const url = new URL(process.argv[2]);
const stripe = new Stripe('sk_test_official_resources', {
  host: url.hostname,
  port: url.port,
  protocol: url.protocol.replace(':', ''),
  maxNetworkRetries: 0,
  telemetry: false,
});

// A service's methods for a path: top-level (`terminal.locations`), or a
// nested list's methods on its owner (`customers.TaxId`: createTaxId, …).
function methods(dotted) {
  const parts = dotted.split('.');
  const last = parts[parts.length - 1];
  if (/^[A-Z]/.test(last)) {
    const owner = parts.slice(0, -1).reduce((o, p) => o[p], stripe);
    const bind = (name) => owner[name].bind(owner);
    return {
      create: bind(`create${last}`),
      retrieve: bind(`retrieve${last}`),
      update: owner[`update${last}`] && bind(`update${last}`),
      list: bind(`list${last}s`),
      del: owner[`delete${last}`] && bind(`delete${last}`),
    };
  }
  const service = parts.reduce((o, p) => o[p], stripe);
  const bind = (name) => service[name] && service[name].bind(service);
  return { create: bind('create'), retrieve: bind('retrieve'), update: bind('update'), list: bind('list'), del: bind('del'), cancel: bind('cancel') };
}

// Replace each "$PATH" with the id of the newest object of that list.
async function resolve(value, memo) {
  if (typeof value === 'string' && value.startsWith('$')) {
    const listPath = value.slice(1);
    if (!(listPath in memo)) {
      const page = await methods(spec.lookups[listPath].node).list({ limit: 1 });
      memo[listPath] = page.data[0].id;
    }
    return memo[listPath];
  }
  if (Array.isArray(value)) return Promise.all(value.map((v) => resolve(v, memo)));
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = await resolve(v, memo);
    return out;
  }
  return value;
}

// Whether an answer shows what was sent: a reference may come back
// expanded, a list of items as a list object.
function agrees(sent, got) {
  if (Array.isArray(sent)) {
    const items = got && !Array.isArray(got) && typeof got === 'object' ? got.data : got;
    return Array.isArray(items) && items.length === sent.length && sent.every((s, i) => agrees(s, items[i]));
  }
  if (sent && typeof sent === 'object') return !!got && typeof got === 'object' && Object.entries(sent).every(([k, v]) => agrees(v, got[k]));
  if (got && typeof got === 'object' && 'id' in got) return got.id === sent;
  return got === sent;
}

function plain(object) {
  const { lastResponse, ...rest } = object;
  return JSON.parse(JSON.stringify(rest));
}

async function walk(m, args, params) {
  const listed = await m.list(...args, params).autoPagingToArray({ limit: 10000 });
  const ids = listed.map((o) => o.id);
  assert.equal(new Set(ids).size, ids.length, `an id listed twice: ${ids}`);
  const stamps = listed.map((o) => o.created).filter((c) => c !== undefined && c !== null);
  assert.deepEqual(stamps, [...stamps].sort((a, b) => b - a), 'not newest first');
  return ids;
}

async function exercise(c) {
  const memo = {};
  const m = methods(c.node);
  const args = 'parent' in c ? [await resolve(c.parent, memo)] : [];
  const done = [];

  const params = await resolve(c.create, memo);
  const created = await m.create(...args, params);
  assert.equal(created.object, c.object);
  assert.ok(agrees(params, created), `create did not show ${JSON.stringify(params)}`);
  done.push('create');

  const fetched = await m.retrieve(...args, created.id);
  assert.deepEqual(plain(fetched), plain(created));
  done.push('retrieve');

  if ('update' in c) {
    const changes = await resolve(c.update, memo);
    const updated = await m.update(...args, created.id, changes);
    assert.equal(updated.id, created.id);
    assert.ok(agrees(changes, updated), `update did not show ${JSON.stringify(changes)}`);
    assert.ok(agrees(changes, await m.retrieve(...args, created.id)), 'retrieve did not show the update');
    done.push('update');
  }

  const filters = { limit: 3, ...(await resolve(c.filter || {}, memo)) };
  const ids = await walk(m, args, filters);
  assert.equal(ids[0], created.id, `the new object is not listed first: ${ids.slice(0, 3)}`);
  done.push('list');

  if (c.delete === 'del') {
    const gone = await m.del(...args, created.id);
    assert.equal(gone.id, created.id);
    assert.equal(gone.deleted, true);
    assert.ok(!(await walk(m, args, filters)).includes(created.id), 'a deleted object is still listed');
    done.push('delete');
  } else if (c.delete === 'cancel') {
    const canceled = await m.cancel(...args, created.id);
    assert.equal(canceled.status, 'canceled');
    assert.equal((await m.retrieve(...args, created.id)).status, 'canceled');
    done.push('cancel');
  }
  return done;
}

async function main() {
  const types = {};
  for (const c of spec.resources) {
    try {
      types[c.path] = await exercise(c);
    } catch (e) {
      throw new Error(`${c.path}: ${e.message}`, { cause: e });
    }
  }
  console.log(JSON.stringify({ types }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
