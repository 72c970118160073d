// IP pools: each pool's used and free addresses, and one pool's claims
// (which pod holds which address). Pools have no watch in the API; they
// change only when an administrator imports one or a pod claims an
// address, so the page reads them once per visit (reload to refresh).

import { get } from "../api";
import { h } from "../dom";
import { bar, millis, time } from "../format";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { heading } from "../widgets";

/** A pool as GET /api/v1/ippools summarizes it. */
interface PoolSummary {
  name: string;
  cidr: string;
  gateway: string;
  size: number;
  used: number;
  createdAt: string | number;
}

/** An address held by a pod. */
interface Claim {
  pool: string;
  ip: string;
  prefixLen: number;
  project: string;
  pod: string;
}

function usageBar(p: PoolSummary): HTMLElement {
  return bar(`addresses used in ${p.name}`, p.used, p.size, `${p.used} used, ${p.size - p.used} free of ${p.size}`);
}

export const ipPoolsPage: Page = {
  title: () => "IP pools",
  async render({ main }) {
    const table = new DataTable<PoolSummary>({
      caption: "IP pools",
      key: (p) => p.name,
      empty: "No IP pools: `wharf ippool import -f pool.yaml` adds one.",
      columns: [
        { title: "Name", render: (p) => h("a", { href: href("ippools", p.name) }, p.name), sortBy: (p) => p.name },
        { title: "CIDR", render: (p) => p.cidr, sortBy: (p) => p.cidr },
        { title: "Gateway", render: (p) => p.gateway, sortBy: (p) => p.gateway },
        { title: "Addresses", render: usageBar, sortBy: (p) => p.used / (p.size || 1), searchText: () => "" },
        { title: "Free", render: (p) => p.size - p.used, sortBy: (p) => p.size - p.used, searchText: () => "" },
        { title: "Created", render: (p) => time(millis(p.createdAt)), sortBy: (p) => millis(p.createdAt), searchText: () => "" },
      ],
    });
    main.append(heading("IP pools"), table.element);
    table.setRows((await get<{ items: PoolSummary[] }>("/ippools")).items);
  },
};

export const ipPoolPage: Page = {
  title: ({ pool }) => `IP pool ${pool}`,
  async render({ main, params }) {
    const answer = await get<{ summary: PoolSummary; claims: Claim[]; pool: { spec: { ranges?: Array<{ start: string; end: string }>; exclude?: string[] } } }>(
      `/ippools/${encodeURIComponent(params.pool)}`,
    );
    const { summary, claims } = answer;
    const table = new DataTable<Claim>({
      caption: `Addresses in use in ${summary.name}`,
      key: (c) => c.ip,
      pageSize: 50,
      empty: "No address is in use.",
      columns: [
        { title: "Address", render: (c) => `${c.ip}/${c.prefixLen}`, sortBy: (c) => c.ip.split(".").reduce((n, part) => n * 256 + Number(part), 0), searchText: (c) => c.ip },
        { title: "Project", render: (c) => h("a", { href: href("projects", c.project, "pods") }, c.project), sortBy: (c) => c.project },
        { title: "Pod", render: (c) => h("a", { href: href("projects", c.project, "pods", c.pod) }, c.pod), sortBy: (c) => c.pod },
      ],
    });
    const ranges = answer.pool.spec.ranges ?? [];
    const exclude = answer.pool.spec.exclude ?? [];
    main.append(
      heading(`IP pool ${summary.name}`, h("a", { href: href("ippools") }, "all IP pools")),
      h(
        "dl",
        { class: "pairs" },
        h("dt", null, "CIDR"),
        h("dd", null, summary.cidr),
        h("dt", null, "Gateway"),
        h("dd", null, summary.gateway),
        h("dt", null, "Ranges"),
        h("dd", null, ranges.length ? ranges.map((r) => `${r.start}–${r.end}`).join(", ") : "the whole CIDR"),
        h("dt", null, "Excluded"),
        h("dd", null, exclude.length ? exclude.join(", ") : "none"),
        h("dt", null, "Addresses"),
        h("dd", null, usageBar(summary)),
      ),
      table.element,
    );
    table.setRows(claims);
  },
};
