// Client conformance for node-redis 4 and ioredis, connected the way the README says:
// from REDIS_URL, REDIS_PASSWORD and REDIS_MODE (what the operator injects).
//
//   node conformance.js node-redis|ioredis check
//       one JSON object: {"client", "mode", "checks": {name: "ok" | "error text"}}
//   node conformance.js node-redis|ioredis loop SECONDS
//       one JSON line per second: {"t", "ok", "errors", "last_error"} of SET+GET rounds
//
// Run by tests/e2e/test_clients.py with NODE_PATH set to the pinned packages.
"use strict";

const clientName = process.argv[2];
const action = process.argv[3];
const url = process.env.REDIS_URL;
const password = process.env.REDIS_PASSWORD || undefined;
const mode = process.env.REDIS_MODE || "standalone";
const cluster = mode === "cluster";

// ---- the README's setup, verbatim in spirit: two lines per client and mode ----------

function connectNodeRedis() {
  const { createClient, createCluster } = require("redis");
  const client = cluster
    ? createCluster({ rootNodes: [{ url }], defaults: { password } })
    : createClient({ url });
  client.on("error", () => {}); // reconnects on its own; errors are counted per command
  return client.connect().then(() => client);
}

function connectIoredis() {
  const Redis = require("ioredis");
  const client = cluster
    ? new Redis.Cluster([url], { redisOptions: { password } })
    : new Redis(url);
  client.on("error", () => {});
  return new Promise((resolve, reject) => {
    client.once("ready", () => resolve(client));
    client.once("end", () => reject(new Error("connection ended before ready")));
  });
}

const connect = clientName === "node-redis" ? connectNodeRedis : connectIoredis;

// ---- one API over both clients ---------------------------------------------------

function raw(client, args) {
  if (clientName === "node-redis") {
    return cluster ? client.sendCommand(undefined, false, args) : client.sendCommand(args);
  }
  return client.call(...args);
}

async function scanAll(client, pattern) {
  const found = new Set();
  let masters;
  if (clientName === "node-redis") {
    masters = cluster ? await Promise.all(client.masters.map((m) => client.nodeClient(m))) : [client];
    for (const node of masters) {
      for await (const key of node.scanIterator({ MATCH: pattern, COUNT: 100 })) found.add(key);
    }
  } else {
    masters = cluster ? client.nodes("master") : [client];
    for (const node of masters) {
      let cursor = "0";
      do {
        const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", 100);
        keys.forEach((k) => found.add(k));
        cursor = next;
      } while (cursor !== "0");
    }
  }
  return found;
}

async function pubsub(client) {
  const channel = `ct-conformance-${clientName}-${process.pid}`;
  let sub;
  const received = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no message within 10 s")), 10000);
    const done = (message) => {
      clearTimeout(timer);
      resolve(message);
    };
    if (clientName === "node-redis") {
      sub = client.duplicate();
      sub.on("error", () => {});
      sub
        .connect()
        .then(() => sub.subscribe(channel, done))
        .then(() => publishUntil())
        .catch(reject);
    } else {
      sub = client.duplicate();
      sub.on("message", (_ch, message) => done(message));
      sub.subscribe(channel).then(() => publishUntil()).catch(reject);
    }
  });
  let published = false;
  async function publishUntil() {
    // A cluster publishes through any node; retry until the subscriber has it.
    for (let i = 0; i < 20 && !published; i++) {
      const n = await client.publish(channel, "hello");
      if (n > 0 || cluster) published = true;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    const message = await received;
    if (message !== "hello") throw new Error(`got ${message}`);
  } finally {
    if (sub) await (clientName === "node-redis" ? sub.disconnect() : sub.quit()).catch(() => {});
  }
}

async function expectRefused(client, args) {
  try {
    await raw(client, args);
  } catch (err) {
    // NOPERM from the ACL; DEBUG is refused earlier still (enable-debug-command no).
    const text = String(err.message);
    if (text.includes("NOPERM") || (args[0] === "DEBUG" && text.includes("not allowed"))) return;
    throw new Error(`${args.join(" ")}: expected NOPERM, got ${err.message}`);
  }
  throw new Error(`${args.join(" ")}: expected NOPERM, but it ran`);
}

async function check() {
  const checks = {};
  const run = async (name, fn) => {
    try {
      await fn();
      checks[name] = "ok";
    } catch (err) {
      checks[name] = String((err && err.message) || err);
    }
  };
  const client = await connect();
  const prefix = `ct:${clientName}:${process.pid}:`;
  await run("set_get_ttl", async () => {
    if (clientName === "node-redis") await client.set(`${prefix}k`, "v", { EX: 60 });
    else await client.set(`${prefix}k`, "v", "EX", 60);
    const value = await client.get(`${prefix}k`);
    const ttl = await client.ttl(`${prefix}k`);
    if (value !== "v" || !(ttl > 0 && ttl <= 60)) throw new Error(`got ${value}, ttl ${ttl}`);
  });
  await run("pubsub", () => pubsub(client));
  await run("scan", async () => {
    for (let i = 0; i < 30; i++) await client.set(`${prefix}scan:${i}`, String(i));
    const found = await scanAll(client, `${prefix}scan:*`);
    if (found.size !== 30) throw new Error(`SCAN found ${found.size} of 30 keys`);
  });
  const refused = require("./commands.json");
  for (const args of refused.disabled) {
    await run(`disabled ${args[0]}`, () => expectRefused(client, args));
  }
  const admin = cluster ? [...refused.admin, ...refused.cluster_admin] : refused.admin;
  for (const args of admin) {
    await run(`admin ${args.slice(0, 2).join(" ")}`, () => expectRefused(client, args));
  }
  if (clientName === "node-redis") await client.disconnect();
  else client.disconnect();
  return { client: clientName, mode, checks };
}

async function loop(seconds) {
  const client = await connect();
  const keys = Array.from({ length: 24 }, (_, i) => `ct:loop:${clientName}:${i}`);
  const end = Date.now() + seconds * 1000;
  let t = 0;
  while (Date.now() < end) {
    const windowEnd = Date.now() + 1000;
    let ok = 0;
    let errors = 0;
    let last = "";
    while (Date.now() < windowEnd) {
      for (const key of keys) {
        if (Date.now() >= windowEnd) break; // one line a second, even while failing
        try {
          const value = String(Date.now());
          await withTimeout(client.set(key, value), 1000);
          const got = await withTimeout(client.get(key), 1000);
          if (got !== value) throw new Error(`read ${got}`);
          ok++;
        } catch (err) {
          errors++;
          last = String((err && err.message) || err).slice(0, 200);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }
    process.stdout.write(JSON.stringify({ t: ++t, ok, errors, last_error: last }) + "\n");
  }
  process.exit(0);
}

function withTimeout(promise, ms) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

(async () => {
  if (action === "check") {
    process.stdout.write(JSON.stringify(await check()) + "\n");
    process.exit(0);
  } else if (action === "loop") {
    await loop(Number(process.argv[4] || "30"));
  } else {
    process.stderr.write("usage: conformance.js node-redis|ioredis check|loop [SECONDS]\n");
    process.exit(2);
  }
})().catch((err) => {
  process.stderr.write(`conformance: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
