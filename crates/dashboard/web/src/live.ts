// Live updates from the API's watches: `?watch=true` answers a stream of
// JSON lines (application/x-ndjson). One long request per watch, resumed
// from the last resourceVersion seen after a drop, instead of polling.

import { get, request } from "./api";

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

/** An object of the cluster API: what a live list keys and resumes by. */
export interface ApiObject {
  metadata: { name: string; project?: string; resourceVersion?: string | number };
}

/** A Kubernetes-style list answer: its items and the revision to watch from. */
interface ListAnswer<T> {
  metadata?: { resourceVersion?: string | number };
  items: T[];
}

/**
 * Lists `path` and then follows its watch, calling `onRows` with the whole
 * current list: at once, then after changes (at most once per animation
 * frame, so a burst of events redraws once). Stops when `signal` aborts.
 */
export async function liveList<T extends ApiObject>(path: string, onRows: (rows: T[]) => void, signal: AbortSignal): Promise<void> {
  const answer = await get<ListAnswer<T>>(path);
  const rows = new Map<string, T>();
  const key = (o: ApiObject) => `${o.metadata.project ?? ""}/${o.metadata.name}`;
  for (const item of answer.items) rows.set(key(item), item);
  onRows([...rows.values()]);
  let scheduled = false;
  const redraw = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      if (!signal.aborted) onRows([...rows.values()]);
    });
  };
  void watch<T>(
    path,
    answer.metadata?.resourceVersion ?? 0,
    (event) => {
      if (event.type === "DELETED") rows.delete(key(event.object));
      else if (event.type === "ADDED" || event.type === "MODIFIED") rows.set(key(event.object), event.object);
      else return;
      redraw();
    },
    signal,
  );
}
