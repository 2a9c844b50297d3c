// graphile-worker drain benchmark, mirroring stoflow-bench's "drain" scenario:
// a fresh database, graphile-worker's schema installed, the worker started and idle, then N no-op
// jobs committed in 5,000-row transactions (graphile_worker.add_jobs over an array of job_spec),
// timed from just before the first insert until no job row is left. Median of --runs runs.
//
// Modes:
//   default       graphile-worker 0.16.6, out-of-the-box options (concurrency 1, maxPoolSize 10).
//   tuned         graphile-worker 0.16.6, the most 0.16 offers: concurrency 24, maxPoolSize 25,
//                 useNodeTime. (0.16 has no local queue and no batched completion.)
//   default-0.17  graphile-worker 0.17.3 (installed as the alias `graphile-worker-batched`),
//                 out-of-the-box options.
//   batched       graphile-worker 0.17.3, the configuration of its performance page
//                 (worker.graphile.org/docs/performance): concurrentJobs 24, maxPoolSize 25,
//                 localQueue { size: 500 }, completeJobBatchDelay 0, failJobBatchDelay 0.
//                 (0.18 needs Node >= 22.18; this machine has Node 20.)
//
// Usage: node graphile.mjs --url postgres://postgres@127.0.0.1:54331/postgres --mode batched
//        [--jobs 20000] [--runs 3] [--db peer_graphile]
// Prints one line per run and a final `RESULT <mode> <median jobs/s>` line.

import pg from "pg";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a.startsWith("--")) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
const serverUrl = args.url ?? process.env.DATABASE_URL;
const mode = args.mode ?? "default";
const N = Number(args.jobs ?? 20000);
const RUNS = Number(args.runs ?? 3);
const DB = args.db ?? "peer_graphile";
if (!serverUrl) throw new Error("--url (server URL, database postgres) is required");
if (!["default", "tuned", "default-0.17", "batched"].includes(mode)) throw new Error(`unknown mode ${mode}`);

const pkg = ["default-0.17", "batched"].includes(mode) ? "graphile-worker-batched" : "graphile-worker";
const gw = await import(pkg);
const { Logger } = await import("@graphile/logger");
const quiet = new Logger(() => (level, message) => {
  if (level === "error") console.error(`graphile-worker: ${message}`);
});

function dbUrl(name) {
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  return u.toString();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function options(connectionString, taskList) {
  const common = { connectionString, taskList, noHandleSignals: true, logger: quiet };
  switch (mode) {
    case "default":
    case "default-0.17":
      return common;
    case "tuned":
      return { ...common, concurrency: 24, maxPoolSize: 25, useNodeTime: true };
    case "batched":
      return {
        ...common,
        concurrency: 24,
        maxPoolSize: 25,
        preset: {
          worker: {
            concurrentJobs: 24,
            maxPoolSize: 25,
            localQueue: { size: 500 },
            completeJobBatchDelay: 0,
            failJobBatchDelay: 0,
          },
        },
      };
  }
}

async function admin(sql) {
  const c = new pg.Client({ connectionString: serverUrl });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

async function oneRun() {
  await admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  await admin(`CREATE DATABASE ${DB}`);
  const url = dbUrl(DB);
  let ran = 0;
  const taskList = {
    noop: async () => {
      ran++;
    },
  };
  await gw.runMigrations(options(url, taskList));
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const runner = await gw.run(options(url, taskList));
  try {
    await sleep(300); // idle workers listening, as stoflow-bench waits for its listeners
    const t0 = performance.now();
    for (let done = 0; done < N; done += 5000) {
      const n = Math.min(5000, N - done);
      await client.query("BEGIN");
      await client.query(
        `SELECT count(*) FROM graphile_worker.add_jobs(
           (SELECT array_agg(json_populate_record(null::graphile_worker.job_spec,
                    '{"identifier":"noop","payload":{}}'::json))
              FROM generate_series(1, $1)))`,
        [n],
      );
      await client.query("COMMIT");
    }
    for (;;) {
      const { rows } = await client.query(
        "SELECT count(*)::int AS left FROM graphile_worker._private_jobs",
      );
      if (rows[0].left === 0) break;
      if (performance.now() - t0 > 600_000) throw new Error("drain did not finish in 600 s");
      await sleep(10);
    }
    const secs = (performance.now() - t0) / 1000;
    if (ran !== N) throw new Error(`drain ran ${ran} tasks for ${N} jobs`);
    return { rate: N / secs, secs };
  } finally {
    await runner.stop();
    await client.end();
    await admin(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  }
}

const version = (await import(`${pkg}/package.json`, { with: { type: "json" } })).default.version;
const rates = [];
for (let i = 1; i <= RUNS; i++) {
  const { rate, secs } = await oneRun();
  rates.push(rate);
  console.log(
    `graphile-worker ${version} ${mode} run ${i}: ${rate.toFixed(0)} jobs/s (${N} jobs in ${secs.toFixed(2)} s)`,
  );
}
rates.sort((a, b) => a - b);
console.log(`RESULT graphile-${mode} ${rates[Math.floor(rates.length / 2)].toFixed(0)}`);
