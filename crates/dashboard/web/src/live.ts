// Live updates from the API's watches: `?watch=true` answers a stream of
// JSON lines (application/x-ndjson). One long request per watch, resumed
// from the last resourceVersion seen after a drop, instead of polling.

import { request } from "./api";

/** One line of a watch stream. */
export interface WatchEvent<T> {
  type: string;
  object: T;
}

/** What a watch needs to resume: the newest resourceVersion seen. */
interface Versioned {
  metadata?: { resourceVersion?: string | number };
}

/**
 * Follows the watch at `path` (without the `watch` parameters) from
 * `resourceVersion`, calling `onEvent` per line, until `signal` aborts.
 * Reconnects after a drop with a growing pause (1 s up to 30 s).
 */
export async function watch<T extends Versioned>(
  path: string,
  resourceVersion: string | number,
  onEvent: (event: WatchEvent<T>) => void,
  signal: AbortSignal,
): Promise<void> {
  let from = String(resourceVersion);
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const separator = path.includes("?") ? "&" : "?";
      const response = await request("GET", `${path}${separator}watch=true&resourceVersion=${encodeURIComponent(from)}`);
      pause = 1000;
      for await (const line of lines(response, signal)) {
        const event = JSON.parse(line) as WatchEvent<T>;
        const version = event.object?.metadata?.resourceVersion;
        if (version !== undefined) from = String(version);
        onEvent(event);
      }
    } catch (error) {
      if (signal.aborted) return;
      console.warn(`watch ${path}: ${error}`);
    }
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 30_000);
  }
}

/** The non-empty lines of a streamed response body. */
async function* lines(response: Response, signal: AbortSignal): AsyncGenerator<string> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  signal.addEventListener("abort", () => void reader.cancel(), { once: true });
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line) yield line;
    }
  }
}
