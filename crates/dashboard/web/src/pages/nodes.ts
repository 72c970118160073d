// Nodes: every node with its allocation against capacity, load and labels,
// kept current by the nodes watch (heartbeats carry the live load).

import { ApiError } from "../api";
import { h } from "../dom";
import { bar, bytes, cores, labels, labelText, age } from "../format";
import { liveList } from "../live";
import { Node, Pod, Resources, sumRequests } from "../objects";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading } from "../widgets";

/** `Ready`, `NotReady (reason)` or `SchedulingDisabled` as a status badge. */
export function nodeCondition(node: Node): HTMLElement {
  const parts = [node.status.ready ? "Ready" : "NotReady"];
  if (node.spec.unschedulable) parts.push("SchedulingDisabled");
  return h(
    "span",
    { class: `phase ${node.status.ready ? "ok" : "bad"}`, title: node.status.notReadyReason ?? "" },
    parts.join(", "),
  );
}

export const nodesPage: Page = {
  title: () => "Nodes",
  async render({ main, query, signal }) {
    // `?pool=NAME` (from the pools page): that pool's nodes, by their pool label.
    const pool = query.get("pool");
    // What is allocated is the requests of the pods bound to a node (the
    // node's own status.allocated may lag). Only administrators may list
    // every project's pods; for others the node's status is what there is.
    let sums: Map<string, Resources> | null = null;
    const allocated = (n: Node): Resources => (sums ? (sums.get(n.metadata.name) ?? { cpuMillis: 0, memoryBytes: 0, pods: 0 }) : n.status.allocated);
    const table = new DataTable<Node>({
      caption: "Nodes",
      key: (n) => n.metadata.name,
      empty: "No nodes have joined: start `wharf agent` on a machine.",
      columns: [
        { title: "Name", render: (n) => h("a", { href: href("nodes", n.metadata.name) }, n.metadata.name), sortBy: (n) => n.metadata.name },
        { title: "Status", render: nodeCondition, sortBy: (n) => (n.status.ready ? 0 : 1) + (n.spec.unschedulable ? 2 : 0), searchText: (n) => (n.status.ready ? "ready" : "notready") },
        {
          title: "CPU allocated",
          render: (n) => bar(`CPU allocated on ${n.metadata.name}`, allocated(n).cpuMillis, n.status.capacity.cpuMillis, `${cores(allocated(n).cpuMillis)} of ${cores(n.status.capacity.cpuMillis)}`),
          sortBy: (n) => allocated(n).cpuMillis / (n.status.capacity.cpuMillis || 1),
          searchText: () => "",
        },
        {
          title: "Memory allocated",
          render: (n) => bar(`memory allocated on ${n.metadata.name}`, allocated(n).memoryBytes, n.status.capacity.memoryBytes, `${bytes(allocated(n).memoryBytes)} of ${bytes(n.status.capacity.memoryBytes)}`),
          sortBy: (n) => allocated(n).memoryBytes / (n.status.capacity.memoryBytes || 1),
          searchText: () => "",
        },
        {
          title: "Pods",
          render: (n) => h("a", { href: `${href("nodes", n.metadata.name)}#pods` }, `${allocated(n).pods} / ${n.status.capacity.pods}`),
          sortBy: (n) => allocated(n).pods,
          searchText: () => "",
        },
        { title: "CPU load", render: (n) => (n.status.cpuLoad === undefined ? "—" : `${Math.round(n.status.cpuLoad * 100)}%`), sortBy: (n) => n.status.cpuLoad ?? -1, searchText: () => "" },
        { title: "Labels", render: (n) => labels(n.metadata.labels), searchText: (n) => labelText(n.metadata.labels) },
        { title: "Heartbeat", render: (n) => age(n.status.lastHeartbeat), sortBy: (n) => n.status.lastHeartbeat, searchText: () => "" },
      ],
    });
    main.append(
      heading(pool ? `Nodes of pool ${pool}` : "Nodes", pool ? h("a", { href: href("nodes") }, "all nodes") : ""),
      h("p", { class: "muted" }, "Updated live from the nodes watch."),
      table.element,
    );
    const path = pool ? `/nodes?labelSelector=${encodeURIComponent(`wharf.io/pool=${pool}`)}` : "/nodes";
    let nodes: Node[] = [];
    try {
      await liveList<Node>(path, (rows) => table.setRows((nodes = rows)), signal);
    } catch (error) {
      main.append(errorNote(error));
      return;
    }
    try {
      await liveList<Pod>(
        "/pods",
        (pods) => {
          const byNode = new Map<string, Pod[]>();
          for (const pod of pods) if (pod.spec.nodeName) byNode.set(pod.spec.nodeName, [...(byNode.get(pod.spec.nodeName) ?? []), pod]);
          sums = new Map([...byNode].map(([node, list]) => [node, sumRequests(list)]));
          table.setRows(nodes);
        },
        signal,
      );
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 403)) main.append(errorNote(error));
    }
  },
};
