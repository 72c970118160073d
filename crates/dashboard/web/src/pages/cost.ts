// Cost: a report over a window grouped by project, pool, cluster or
// deployment (the API's own grouping), and the same grouping over time as
// a stacked bar per day (or per hour for the last day), one report request
// per bar. Administrators and inventory readers see every project; others
// their own projects' rows, as the API decides.

import { get } from "../api";
import { stackedBars } from "../chart";
import { field, h } from "../dom";
import { navigate, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading } from "../widgets";

interface CostRow {
  group: string;
  used: number;
  idle: number;
  unallocated: number;
  total: number;
}

interface CostReport {
  by: string;
  since: string | number;
  until: string | number;
  minutesRecorded: number;
  rows: CostRow[];
}

const GROUPINGS = ["project", "pool", "cluster", "deployment"] as const;
const SPANS: Record<string, { bars: number; hours: number; label: (d: Date) => string }> = {
  day: { bars: 24, hours: 1, label: (d) => `${d.getHours()}h` },
  week: { bars: 7, hours: 24, label: (d) => d.toLocaleDateString(undefined, { weekday: "short" }) },
  month: { bars: 30, hours: 24, label: (d) => `${d.getDate()}` },
};

const money = (value: number) => value.toFixed(2);

export const costPage: Page = {
  title: () => "Cost",
  async render({ main, query }) {
    const by = GROUPINGS.find((g) => g === query.get("by")) ?? "project";
    const spanName = query.get("span") && SPANS[query.get("span")!] ? query.get("span")! : "week";
    const span = SPANS[spanName];
    const bySelect = h("select", { name: "by" }, ...GROUPINGS.map((g) => h("option", { value: g, selected: g === by }, g)));
    const spanSelect = h("select", { name: "span" }, ...Object.keys(SPANS).map((s) => h("option", { value: s, selected: s === spanName }, `last ${s}`)));
    const form = h(
      "form",
      {
        class: "inline-form filters",
        onsubmit: (event: Event) => {
          event.preventDefault();
          navigate(`/ui/cost?by=${bySelect.value}&span=${spanSelect.value}`);
        },
      },
      field("Group by", bySelect),
      field("Window", spanSelect),
      h("button", { type: "submit" }, "Show"),
    );
    const table = new DataTable<CostRow>({
      caption: `Cost by ${by}, last ${spanName}`,
      key: (r) => r.group,
      initialSort: 4,
      initialDescending: true,
      empty: "No cost recorded in this window.",
      columns: [
        { title: by[0].toUpperCase() + by.slice(1), render: (r) => r.group || "(none)", sortBy: (r) => r.group },
        { title: "Used", render: (r) => money(r.used), sortBy: (r) => r.used, searchText: () => "" },
        { title: "Idle", render: (r) => money(r.idle), sortBy: (r) => r.idle, searchText: () => "" },
        { title: "Unallocated", render: (r) => money(r.unallocated), sortBy: (r) => r.unallocated, searchText: () => "" },
        { title: "Total", render: (r) => money(r.total), sortBy: (r) => r.total, searchText: () => "" },
      ],
    });
    const chartArea = h("div", { class: "charts" });
    const note = h("p", { class: "muted" });
    main.append(heading("Cost"), form, note, chartArea, table.element);
    const hours = span.bars * span.hours;
    try {
      const report = await get<CostReport>(`/cost/report?by=${by}&since=${hours}h`);
      table.setRows(report.rows);
      note.textContent = `${report.minutesRecorded} minutes recorded in the window.`;
    } catch (error) {
      main.append(errorNote(error));
      return;
    }
    // One report per bar: the API reports a window, not a series.
    const now = Date.now();
    const slots = Array.from({ length: span.bars }, (_, i) => {
      const untilHours = (span.bars - 1 - i) * span.hours;
      return { since: untilHours + span.hours, until: untilHours, start: new Date(now - (untilHours + span.hours) * 3_600_000) };
    });
    const reports = await Promise.allSettled(slots.map((s) => get<CostReport>(`/cost/report?by=${by}&since=${s.since}h&until=${s.until === 0 ? "0s" : `${s.until}h`}`)));
    const bars = slots.map((slot, i) => {
      const result = reports[i];
      const parts: Record<string, number> = {};
      if (result.status === "fulfilled") for (const row of result.value.rows) parts[row.group || "(none)"] = row.total;
      return { label: span.label(slot.start), parts };
    });
    chartArea.replaceChildren(stackedBars(`Cost by ${by} over the last ${spanName}`, bars, money));
  },
};
