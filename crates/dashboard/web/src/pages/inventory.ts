// Resource management (inventory readers): clusters, their pools with node
// counts and autoscaling, and machine classes with prices. These change
// only by an operator's hand and have no watch: read once per visit.

import { get } from "../api";
import { h } from "../dom";
import { bar, labels, labelText } from "../format";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading } from "../widgets";

interface Cluster {
  metadata: { name: string; labels?: Record<string, string> };
  spec: { kind: string; idc?: string; provider?: { driver: string; machines?: string[] }; pricePerHour?: number };
}

interface Pool {
  metadata: { name: string };
  spec: { cluster: string; labels?: Record<string, string>; machineClasses?: string[]; pricePerHour?: number; autoscale?: { min: number; max: number; machineClass: string } };
  status?: { nodes: number; readyNodes: number };
}

interface MachineClass {
  metadata: { name: string };
  spec: { cpu?: { min?: string; max?: string }; memory?: { min?: string; max?: string }; pricePerHour: number; tier: string };
}

const range = (r?: { min?: string; max?: string }) => (!r ? "any" : `${r.min ?? "0"}–${r.max ?? "∞"}`);
const price = (p?: number) => (p === undefined ? "—" : `${p.toFixed(3)} / h`);

export const inventoryPage: Page = {
  title: () => "Clusters and pools",
  async render({ main }) {
    const clusters = new DataTable<Cluster>({
      caption: "Clusters",
      key: (c) => c.metadata.name,
      empty: "No clusters.",
      columns: [
        { title: "Name", render: (c) => c.metadata.name, sortBy: (c) => c.metadata.name },
        { title: "Kind", render: (c) => c.spec.kind, sortBy: (c) => c.spec.kind },
        { title: "IDC", render: (c) => c.spec.idc ?? "—", sortBy: (c) => c.spec.idc ?? "" },
        { title: "Provider", render: (c) => (c.spec.provider ? `${c.spec.provider.driver} (${c.spec.provider.machines?.length ?? 0} machines)` : "none"), sortBy: (c) => c.spec.provider?.driver ?? "" },
        { title: "Price", render: (c) => price(c.spec.pricePerHour), sortBy: (c) => c.spec.pricePerHour ?? 0, searchText: () => "" },
        { title: "Labels", render: (c) => labels(c.metadata.labels), searchText: (c) => labelText(c.metadata.labels) },
      ],
    });
    const pools = new DataTable<Pool>({
      caption: "Pools",
      key: (p) => p.metadata.name,
      empty: "No pools.",
      columns: [
        { title: "Name", render: (p) => p.metadata.name, sortBy: (p) => p.metadata.name },
        { title: "Cluster", render: (p) => p.spec.cluster, sortBy: (p) => p.spec.cluster },
        {
          title: "Nodes ready",
          render: (p) => h("a", { href: `${href("nodes")}?pool=${encodeURIComponent(p.metadata.name)}`, title: "nodes of this pool" }, bar(`ready nodes of ${p.metadata.name}`, p.status?.readyNodes ?? 0, p.status?.nodes ?? 0, `${p.status?.readyNodes ?? 0} of ${p.status?.nodes ?? 0}`)),
          sortBy: (p) => p.status?.nodes ?? 0,
          searchText: () => "",
        },
        { title: "Autoscale", render: (p) => (p.spec.autoscale ? `${p.spec.autoscale.min}–${p.spec.autoscale.max} × ${p.spec.autoscale.machineClass}` : "off"), sortBy: (p) => p.spec.autoscale?.max ?? 0 },
        { title: "Machine classes", render: (p) => (p.spec.machineClasses ?? []).join(", ") || "any", searchText: (p) => (p.spec.machineClasses ?? []).join(" ") },
        { title: "Price", render: (p) => price(p.spec.pricePerHour), sortBy: (p) => p.spec.pricePerHour ?? 0, searchText: () => "" },
        { title: "Node labels", render: (p) => labels(p.spec.labels), searchText: (p) => labelText(p.spec.labels) },
      ],
    });
    const classes = new DataTable<MachineClass>({
      caption: "Machine classes",
      key: (m) => m.metadata.name,
      empty: "No machine classes.",
      columns: [
        { title: "Name", render: (m) => m.metadata.name, sortBy: (m) => m.metadata.name },
        { title: "Tier", render: (m) => m.spec.tier, sortBy: (m) => m.spec.tier },
        { title: "CPU", render: (m) => range(m.spec.cpu), searchText: () => "" },
        { title: "Memory", render: (m) => range(m.spec.memory), searchText: () => "" },
        { title: "Price", render: (m) => price(m.spec.pricePerHour), sortBy: (m) => m.spec.pricePerHour, searchText: () => "" },
      ],
    });
    main.append(heading("Clusters and pools"), h("h2", null, "Clusters"), clusters.element, h("h2", null, "Pools"), pools.element, h("h2", null, "Machine classes"), classes.element);
    const [c, p, m] = await Promise.allSettled([
      get<{ items: Cluster[] }>("/clusters"),
      get<{ items: Pool[] }>("/pools"),
      get<{ items: MachineClass[] }>("/machineclasses"),
    ]);
    for (const [result, table] of [[c, clusters], [p, pools], [m, classes]] as const) {
      if (result.status === "fulfilled") (table as DataTable<unknown>).setRows(result.value.items);
      else main.append(errorNote(result.reason));
    }
  },
};
