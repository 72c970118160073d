// One node: capacity and allocation bars, labels, taints, conditions, live
// load charts (the last hour from the metrics API, then extended from the
// node's own heartbeats as the nodes watch delivers them), its events and
// the pods on it across the projects the user can see.

import { ApiError, get } from "../api";
import { LineChart } from "../chart";
import { h, replace } from "../dom";
import { age, bar, bytes, cores, labels, time } from "../format";
import { watch } from "../live";
import { ClusterEvent, Node, Pod, Resources, sumRequests } from "../objects";
import { Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading } from "../widgets";
import { nodeCondition } from "./nodes";
import { eventsTable } from "./pod";
import { podColumns } from "./pods";
import type { Project } from "./projects";

/** A metrics query answer: series of `[unix seconds, value]` points. */
interface QueryResult {
  series: Array<{ labels: Record<string, string>; points: Array<[number, number]> }>;
}

/** The last hour of `metric` on `node`, summed over its series, in unix ms. */
async function history(node: string, metric: string): Promise<Array<[number, number]>> {
  const end = Math.floor(Date.now() / 1000);
  const answer = await get<QueryResult>(`/metrics/query?metric=${encodeURIComponent(metric)}&endpoint=${encodeURIComponent(node)}&start=${end - 3600}&end=${end}&agg=sum`);
  return (answer.series[0]?.points ?? []).map(([t, v]) => [t * 1000, v]);
}

/** `allocated`: the requests of the node's pods when they were listed, else the node's status. */
function details(node: Node, requested: Resources | null): HTMLElement {
  const { capacity } = node.status;
  const allocated = requested ?? node.status.allocated;
  const taints = node.spec.taints ?? [];
  return h(
    "dl",
    { class: "pairs" },
    h("dt", null, "Status"),
    h("dd", null, nodeCondition(node), node.status.notReadyReason ? ` ${node.status.notReadyReason}` : ""),
    h("dt", null, "Address"),
    h("dd", null, node.spec.address ?? "—"),
    h("dt", null, "CPU"),
    h("dd", null, bar("CPU allocated", allocated.cpuMillis, capacity.cpuMillis, `${cores(allocated.cpuMillis)} of ${cores(capacity.cpuMillis)} allocated`)),
    h("dt", null, "Memory"),
    h("dd", null, bar("memory allocated", allocated.memoryBytes, capacity.memoryBytes, `${bytes(allocated.memoryBytes)} of ${bytes(capacity.memoryBytes)} allocated`)),
    h("dt", null, "Pods"),
    h("dd", null, bar("pods allocated", allocated.pods, capacity.pods, `${allocated.pods} of ${capacity.pods}`)),
    h("dt", null, "Allocation from"),
    h("dd", null, requested ? "the requests of the pods listed below (those of projects you can read)" : "the node's status"),
    h("dt", null, "Live load"),
    h(
      "dd",
      null,
      node.status.cpuLoad === undefined
        ? "not reported"
        : `CPU ${Math.round(node.status.cpuLoad * 100)}%, load average ${node.status.loadAverage?.toFixed(2) ?? "—"}, memory available ${node.status.memoryAvailableBytes === undefined ? "—" : bytes(node.status.memoryAvailableBytes)}`,
    ),
    h("dt", null, "Labels"),
    h("dd", null, labels(node.metadata.labels)),
    h("dt", null, "Taints"),
    h("dd", null, taints.length ? taints.map((t) => `${t.key}${t.value ? `=${t.value}` : ""}:${t.effect}`).join(", ") : "none"),
    h("dt", null, "Cost per hour"),
    h("dd", null, node.spec.costPerHour === undefined ? "—" : String(node.spec.costPerHour)),
    h("dt", null, "Last heartbeat"),
    h("dd", null, time(node.status.lastHeartbeat), " (", age(node.status.lastHeartbeat), " ago)"),
    ...Object.entries(node.status.info ?? {}).flatMap(([k, v]) => [h("dt", null, k), h("dd", null, v)]),
  );
}

export const nodePage: Page = {
  title: ({ node }) => `Node ${node}`,
  async render({ main, params, signal }) {
    const name = params.node;
    const node = await get<Node>(`/nodes/${encodeURIComponent(name)}`);
    let requested: Resources | null = null;
    const summary = h("section", { "aria-label": "node details" }, details(node, requested));
    const cpu = new LineChart("CPU busy", "%");
    const load = new LineChart("Load average (1 min)");
    const memory = new LineChart("Memory used", "B");
    const chartNote = h("div");
    const pods = new DataTable<Pod>({ caption: `Pods on ${name}`, key: (p) => `${p.metadata.project}/${p.metadata.name}`, empty: "No pods on this node.", columns: podColumns(true) });
    const events = eventsTable(`Events of node ${name}`);
    main.append(
      heading(`Node ${name}`),
      summary,
      h("h2", null, "Load"),
      h("div", { class: "charts" }, cpu.element, load.element, memory.element),
      chartNote,
      h("h2", { id: "pods" }, "Pods"),
      pods.element,
      h("h2", null, "Events"),
      events.element,
    );
    const [busy, loadPoints, used] = await Promise.allSettled([history(name, "cpu.busy"), history(name, "load.1min"), history(name, "mem.memused")]);
    if (busy.status === "fulfilled") cpu.setLines([{ name: "cpu.busy", points: busy.value }]);
    if (loadPoints.status === "fulfilled") load.setLines([{ name: "load.1min", points: loadPoints.value }]);
    if (used.status === "fulfilled") memory.setLines([{ name: "mem.memused", points: used.value }]);
    // Non-administrators may not read node series: say so, the live points
    // from the node's heartbeats still draw. A metric not pushed yet (a new
    // node) only leaves its chart empty until they do.
    const refused = [busy, loadPoints, used].find((r) => r.status === "rejected" && r.reason instanceof ApiError && r.reason.status === 403);
    if (refused?.status === "rejected") {
      chartNote.append(h("p", { class: "muted" }, `No history: ${(refused.reason as ApiError).message}. Showing live points from the node's heartbeats.`));
    }
    // Heartbeats update the node object: follow it for the bars and the charts.
    const addLive = (current: Node) => {
      const at = current.status.lastHeartbeat || Date.now();
      if (current.status.cpuLoad !== undefined) cpu.push("cpu.busy", at, current.status.cpuLoad * 100);
      if (current.status.loadAverage !== undefined) load.push("load.1min", at, current.status.loadAverage);
      if (current.status.memoryAvailableBytes !== undefined) memory.push("mem.memused", at, current.status.capacity.memoryBytes - current.status.memoryAvailableBytes);
    };
    void watch<Node>("/nodes", node.metadata.resourceVersion ?? 0, (event) => {
      if (event.object.metadata.name !== name || event.type !== "MODIFIED") return;
      Object.assign(node, event.object);
      replace(summary, details(node, requested));
      addLive(event.object);
    }, signal);
    try {
      events.setRows((await get<ClusterEvent[]>(`/events?object=${encodeURIComponent(name)}`)).reverse());
    } catch (error) {
      main.append(errorNote(error));
    }
    // Pods have no cross-project list for users: one request per visible project.
    try {
      const projects = await get<Project[]>("/projects");
      const lists = await Promise.allSettled(projects.map((p) => get<{ items: Pod[] }>(`/projects/${encodeURIComponent(p.name)}/pods?nodeName=${encodeURIComponent(name)}`)));
      const onNode = lists.flatMap((l) => (l.status === "fulfilled" ? l.value.items : []));
      pods.setRows(onNode);
      requested = sumRequests(onNode);
      replace(summary, details(node, requested));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
