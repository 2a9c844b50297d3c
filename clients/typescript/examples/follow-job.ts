// Logs in, enqueues a `noop` job and follows it over Server-Sent Events until it is done.
// Build and run: npx tsc && STOFLOW_API=http://localhost:8080 node dist/examples/follow-job.js
// (STOFLOW_EMAIL / STOFLOW_PASSWORD default to ./run's demo seller).
import { jobEvents, stoflowClient } from "../src/index.js";

const base = process.env.STOFLOW_API ?? "http://localhost:8080";
let token: string | undefined;
const api = stoflowClient(base, () => token);

const login = await api.POST("/v1/auth/login", {
  body: {
    email: process.env.STOFLOW_EMAIL ?? "seller@demo.stoflow.dev",
    password: process.env.STOFLOW_PASSWORD ?? "demo-password-1",
  },
});
if (!login.data) throw new Error(`login failed: ${JSON.stringify(login.error)}`);
token = login.data.access_token;

// Subscribe first: a job enqueued before the stream opens could finish unseen.
const stop = new AbortController();
const events = await jobEvents(api, { kind: "noop", signal: stop.signal });

const queued = await api.POST("/v1/jobs", {
  body: { job: { kind: "noop", sleep_ms: 200 } },
});
if (!queued.data) throw new Error(`enqueue failed: ${JSON.stringify(queued.error)}`);
const id = queued.data.id;
console.log(`job ${id} ${queued.data.state}`);

const timeout = setTimeout(() => stop.abort(), 30_000);
let last = queued.data.state;
try {
  for await (const change of events) {
    if (change.id !== id) continue;
    console.log(`job ${id} ${change.state} (attempt ${change.attempt})`);
    last = change.state;
    if (last === "done" || last === "dead" || last === "cancelled") break;
  }
} finally {
  clearTimeout(timeout);
  stop.abort();
}
if (last !== "done") {
  console.error(`job ${id} ended ${last}`);
  process.exit(1);
}
