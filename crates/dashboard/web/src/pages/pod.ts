// One pod: status, IP, node, containers with restarts, conditions, events
// and a live log view (the API's `log?follow=true` stream, read as it
// arrives). The pod itself is followed through the project's pods watch.

import { get, request } from "../api";
import { LineChart } from "../chart";
import { h, replace } from "../dom";
import { age, millis, time } from "../format";
import { watch } from "../live";
import { ClusterEvent, ContainerState, Pod, podDeployment, restarts } from "../objects";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading, messageOf } from "../widgets";
import { podPhase } from "./pods";

/** Most lines the log view keeps: older ones scroll away. */
const LOG_LINES = 5000;

/** A table of events, newest first. */
export function eventsTable(caption: string): DataTable<ClusterEvent> {
  return new DataTable<ClusterEvent>({
    caption,
    empty: "No events.",
    initialSort: 0,
    initialDescending: true,
    columns: [
      { title: "Last seen", render: (e) => time(e.lastTimestamp), sortBy: (e) => e.lastTimestamp, searchText: () => "" },
      { title: "Type", render: (e) => h("span", { class: e.type === "Warning" ? "phase bad" : "" }, e.type), sortBy: (e) => e.type },
      { title: "Reason", render: (e) => e.reason, sortBy: (e) => e.reason },
      { title: "Message", render: (e) => e.message, searchText: (e) => e.message },
      { title: "Count", render: (e) => e.count, sortBy: (e) => e.count, searchText: () => "" },
      { title: "Source", render: (e) => e.source, sortBy: (e) => e.source },
    ],
  });
}

function stateText(state: ContainerState | undefined): string {
  if (state?.running) return "running";
  if (state?.terminated) return `terminated: ${state.terminated.reason} (exit ${state.terminated.exitCode})`;
  if (state?.waiting) return `waiting: ${state.waiting.reason}`;
  return "—";
}

function details(pod: Pod): HTMLElement {
  const project = pod.metadata.project ?? "";
  const owner = podDeployment(pod);
  const statuses = pod.status?.containerStatuses ?? [];
  return h(
    "div",
    null,
    h(
      "dl",
      { class: "pairs" },
      h("dt", null, "Status"),
      h("dd", null, podPhase(pod), pod.status?.message ? ` ${pod.status.message}` : ""),
      h("dt", null, "IP"),
      h("dd", { id: "pod-ip" }, pod.status?.podIP ?? "—"),
      h("dt", null, "Node"),
      h("dd", null, pod.spec.nodeName ? h("a", { href: href("nodes", pod.spec.nodeName) }, pod.spec.nodeName) : "not scheduled yet"),
      h("dt", null, "Deployment"),
      h("dd", null, owner ? h("a", { href: href("projects", project, "deployments", owner) }, owner) : "—"),
      h("dt", null, "Restarts"),
      h("dd", null, String(restarts(pod))),
      h("dt", null, "Created"),
      h("dd", null, time(millis(pod.metadata.creationTimestamp)), " (", age(millis(pod.metadata.creationTimestamp)), " ago)"),
    ),
    h(
      "table",
      null,
      h("caption", null, "Containers"),
      h("thead", null, h("tr", null, ...["Name", "Image", "Ready", "State", "Restarts"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        null,
        ...pod.spec.containers.map((c) => {
          const s = statuses.find((x) => x.name === c.name);
          return h("tr", null, h("td", null, c.name), h("td", { class: "mono" }, c.image), h("td", null, s?.ready ? "yes" : "no"), h("td", null, stateText(s?.state)), h("td", null, String(s?.restartCount ?? 0)));
        }),
      ),
    ),
    h(
      "table",
      null,
      h("caption", null, "Conditions"),
      h("thead", null, h("tr", null, ...["Type", "Status", "Reason", "Message"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        null,
        ...(pod.status?.conditions ?? []).map((c) => h("tr", null, h("td", null, c.type), h("td", null, c.status), h("td", null, c.reason ?? ""), h("td", null, c.message ?? ""))),
      ),
    ),
  );
}

/** The log view: follows the container's log until the page is left. */
class LogView {
  readonly element: HTMLElement;
  private readonly output = h("pre", { class: "log", id: "pod-log", tabindex: 0, "aria-label": "container log", "aria-live": "off" });
  private readonly state = h("p", { class: "muted", "aria-live": "polite" });
  private lines = 0;
  private following: AbortController | null = null;

  constructor(private readonly path: string, private readonly containers: string[], signal: AbortSignal) {
    const select = h("select", { id: "log-container", onchange: () => this.follow(select.value) }, ...containers.map((c) => h("option", { value: c }, c)));
    this.element = h(
      "section",
      { "aria-label": "log" },
      h("div", { class: "table-tools" }, h("label", { for: "log-container" }, "Container "), select),
      this.state,
      this.output,
    );
    signal.addEventListener("abort", () => this.following?.abort(), { once: true });
  }

  /** Says the log has not started yet. */
  waiting(): void {
    this.state.textContent = "The log starts once a container of the pod runs on a node.";
  }

  /** Starts following `container` (the first without an argument), ending any earlier stream. */
  async follow(container = this.containers[0]): Promise<void> {
    this.following?.abort();
    const following = new AbortController();
    this.following = following;
    this.output.replaceChildren();
    this.lines = 0;
    this.state.textContent = "Connecting…";
    try {
      const response = await request("GET", `${this.path}/log?follow=true&tailLines=500&container=${encodeURIComponent(container)}`);
      this.state.textContent = "Following the log live.";
      const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
      following.signal.addEventListener("abort", () => void reader.cancel(), { once: true });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.append(value);
      }
      if (!following.signal.aborted) this.state.textContent = "The log stream ended (the container stopped or the node closed it).";
    } catch (error) {
      if (!following.signal.aborted) this.state.replaceChildren(errorNote(error));
    }
  }

  private append(text: string): void {
    const atBottom = this.output.scrollTop + this.output.clientHeight >= this.output.scrollHeight - 4;
    this.output.append(text);
    this.lines += (text.match(/\n/g) ?? []).length;
    // Drop the oldest chunks once over the limit, so a chatty container
    // cannot grow the page without bound.
    while (this.lines > LOG_LINES && this.output.firstChild) {
      const first = this.output.firstChild;
      this.lines -= (first.textContent?.match(/\n/g) ?? []).length;
      first.remove();
    }
    if (atBottom) this.output.scrollTop = this.output.scrollHeight;
  }
}

/** A metrics query answer: series of `[unix seconds, value]` points. */
interface QueryResult {
  series: Array<{ labels: Record<string, string>; points: Array<[number, number]> }>;
}

/**
 * Charts of the pod's CPU (cores, the rate of its CPU seconds) and memory
 * (working set) per container over the last hour. Metrics have no watch;
 * the charts are read with the page and again on Refresh.
 */
function podCharts(project: string, name: string): { element: HTMLElement; load: () => Promise<void> } {
  const cpu = new LineChart("CPU (cores)");
  const memory = new LineChart("Memory working set", "B");
  const note = h("div");
  const load = async () => {
    const end = Math.floor(Date.now() / 1000);
    const query = (metric: string, rate: boolean) =>
      get<QueryResult>(
        `/metrics/query?${new URLSearchParams({ metric, tags: `project=${project},pod=${name}`, start: String(end - 3600), end: String(end), agg: "sum", by: "container", rate: String(rate) })}`,
      );
    const lines = (answer: QueryResult) => answer.series.map((s) => ({ name: s.labels.container ?? name, points: s.points.map(([t, v]) => [t * 1000, v] as [number, number]) }));
    note.replaceChildren();
    try {
      const [c, m] = await Promise.all([query("container.cpu.usage_seconds", true), query("container.mem.working_set", false)]);
      cpu.setLines(lines(c));
      memory.setLines(lines(m));
    } catch (error) {
      // A pod whose node has pushed nothing yet has no series at all.
      note.replaceChildren(h("p", { class: "muted" }, `No metrics: ${messageOf(error)}`));
    }
  };
  const refresh = h("button", { type: "button", class: "small", onclick: () => void load() }, "Refresh");
  return { element: h("section", { "aria-label": "pod metrics" }, h("div", { class: "charts" }, cpu.element, memory.element), h("div", { class: "table-tools" }, refresh), note), load };
}

export const podPage: Page = {
  title: ({ name }) => `Pod ${name}`,
  async render({ main, params, signal }) {
    const { project, name } = params;
    const path = `/projects/${encodeURIComponent(project)}/pods/${encodeURIComponent(name)}`;
    const pod = await get<Pod>(path);
    const summary = h("section", { "aria-label": "pod details" }, details(pod));
    const events = eventsTable(`Events of pod ${name}`);
    const log = new LogView(path, pod.spec.containers.map((c) => c.name), signal);
    const charts = podCharts(project, name);
    main.append(
      heading(`Pod ${name}`, h("a", { href: href("projects", project, "pods") }, `all pods of ${project}`)),
      summary,
      h("h2", null, "Metrics"),
      charts.element,
      h("h2", null, "Events"),
      events.element,
      h("h2", null, "Log"),
      log.element,
    );
    const loadEvents = async () => {
      try {
        events.setRows(await get<ClusterEvent[]>(`/projects/${encodeURIComponent(project)}/events?object=${encodeURIComponent(name)}`));
      } catch (error) {
        console.warn(`events of ${name}: ${messageOf(error)}`);
      }
    };
    await loadEvents();
    void charts.load();
    // The log is served by the pod's node once a container has started there.
    let logging = false;
    const startLog = (current: Pod) => {
      if (logging || !current.spec.nodeName || current.status?.phase === "Pending") return;
      logging = true;
      void log.follow();
    };
    log.waiting();
    // Events have no watch of their own; a pod's events follow its status
    // changes, so they are re-read when the pod changes (not on a timer).
    void watch<Pod>(`/projects/${encodeURIComponent(project)}/pods`, pod.metadata.resourceVersion ?? 0, (event) => {
      if (event.object.metadata.name !== name) return;
      if (event.type === "DELETED") {
        replace(summary, h("p", { class: "muted" }, "This pod has been deleted."));
        return;
      }
      replace(summary, details(event.object));
      void loadEvents();
      startLog(event.object);
    }, signal);
    startLog(pod);
  },
};
