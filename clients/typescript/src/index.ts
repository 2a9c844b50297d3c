// The Stoflow Jobs API, typed: `paths` and `components` are generated from the API's
// /openapi.json (src/schema.ts, `npm run generate`); requests go through openapi-fetch.
import createClient, { type Client } from "openapi-fetch";

import type { components, paths } from "./schema.js";

export type { components, paths };
export type Schemas = components["schemas"];
export type JobChange = Schemas["JobChange"];
export type KindName = Schemas["KindName"];

export type StoflowClient = Client<paths>;

/** A client for `baseUrl`; `token` is read before each request (sent as a bearer token when set). */
export function stoflowClient(baseUrl: string, token?: () => string | undefined): StoflowClient {
  const client = createClient<paths>({ baseUrl });
  client.use({
    onRequest({ request }) {
      const t = token?.();
      if (t) request.headers.set("authorization", `Bearer ${t}`);
      return request;
    },
  });
  return client;
}

/**
 * Job state changes from `GET /v1/events` (Server-Sent Events), as they happen. The stream is
 * open when this resolves, so changes made afterwards are not missed; stop with `signal`.
 */
export async function jobEvents(
  client: StoflowClient,
  opts: { kind?: KindName; signal?: AbortSignal } = {},
): Promise<AsyncGenerator<JobChange>> {
  const { data, error, response } = await client.GET("/v1/events", {
    params: { query: { kind: opts.kind } },
    parseAs: "stream",
    signal: opts.signal,
  });
  if (error !== undefined || !data) {
    throw new Error(`GET /v1/events: ${response.status} ${JSON.stringify(error)}`);
  }
  return parseEvents<JobChange>(data);
}

/** Parses an SSE body: one value per event, from its `data:` lines (comments are keep-alives). */
async function* parseEvents<T>(body: ReadableStream<Uint8Array>): AsyncGenerator<T> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
    let end: number;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (data) yield JSON.parse(data) as T;
    }
  }
}
