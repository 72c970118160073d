// Alerts: the rules of the cluster (administrators, /ui/alerts) or of a
// project (/ui/projects/NAME/alerts), the alerts they hold (pending and
// firing), their recent transitions, and a chart of a rule's metric
// against its threshold. Alert rules have no watch in the API; the
// evaluator rewrites their status every evaluation, so the page reads
// them once per visit (the Reload button reads them again).

import { get } from "../api";
import { LineChart } from "../chart";
import { h } from "../dom";
import { labels, labelText, time } from "../format";
import { Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading } from "../widgets";
import { projectHeader, projectTabs } from "./project";

interface Alert {
  labels: Record<string, string>;
  state: string;
  value: number;
  activeAt: number;
  firedAt?: number;
  silencedBy?: string;
}

interface Transition {
  at: number;
  labels: Record<string, string>;
  from?: string;
  to?: string;
  value: number;
}

interface Rule {
  metadata: { name: string; project?: string };
  spec: { metric: string; tags: string; rate: boolean; aggregation: string; by: string[]; windowSeconds: number; op: string; threshold: number; forSeconds: number; severity: string };
  status: { alerts?: Alert[]; history?: Transition[]; error?: string; evaluatedAt?: number };
}

/** An alert with the rule it belongs to. */
interface RuleAlert extends Alert {
  rule: Rule;
}

interface RuleTransition extends Transition {
  rule: string;
}

function condition(rule: Rule): string {
  const s = rule.spec;
  return `${s.aggregation}(${s.rate ? "rate " : ""}${s.metric}${s.tags ? `{${s.tags}}` : ""}${s.by.length ? ` by ${s.by.join(",")}` : ""}) over ${s.windowSeconds}s ${s.op} ${s.threshold}${s.forSeconds ? ` for ${s.forSeconds}s` : ""}`;
}

function stateBadge(state: string | undefined): HTMLElement {
  const tone = state === "firing" ? "bad" : state === "pending" ? "wait" : "ok";
  return h("span", { class: `phase ${tone}` }, state ?? "inactive");
}

/** The last hour of a rule's metric, as the rule aggregates it, with its threshold. */
async function ruleChart(rule: Rule, chart: LineChart, project: string | null): Promise<void> {
  const s = rule.spec;
  const end = Math.floor(Date.now() / 1000);
  // Non-administrators read series only under their project's tag.
  const tags = [s.tags, project && !/\bproject=/.test(s.tags) ? `project=${project}` : ""].filter(Boolean).join(",");
  const query = new URLSearchParams({ metric: s.metric, start: String(end - 3600), end: String(end), agg: s.aggregation, rate: String(s.rate) });
  if (tags) query.set("tags", tags);
  if (s.by.length) query.set("by", s.by.join(","));
  const answer = await get<{ series: Array<{ labels: Record<string, string>; points: Array<[number, number]> }> }>(`/metrics/query?${query}`);
  const lines = answer.series.map((series) => ({ name: labelText(series.labels) || s.metric, points: series.points.map(([t, v]) => [t * 1000, v] as [number, number]) }));
  const times = lines.flatMap((l) => l.points.map((p) => p[0]));
  const span: Array<[number, number]> = times.length ? [[Math.min(...times), s.threshold], [Math.max(...times), s.threshold]] : [];
  chart.setLines([...lines, { name: `threshold ${s.op} ${s.threshold}`, points: span }]);
}

async function renderAlerts(main: HTMLElement, project: string | null): Promise<void> {
  const base = project ? `/projects/${encodeURIComponent(project)}/alerts` : "/alerts";
  const chartArea = h("div", { class: "charts" });
  const active = new DataTable<RuleAlert>({
    caption: "Active alerts",
    empty: "No alert is pending or firing.",
    columns: [
      { title: "State", render: (a) => stateBadge(a.state), sortBy: (a) => (a.state === "firing" ? 0 : 1) },
      { title: "Rule", render: (a) => a.rule.metadata.name, sortBy: (a) => a.rule.metadata.name },
      { title: "Severity", render: (a) => a.rule.spec.severity, sortBy: (a) => a.rule.spec.severity },
      { title: "Labels", render: (a) => labels(a.labels), searchText: (a) => labelText(a.labels) },
      { title: "Value", render: (a) => a.value.toFixed(2), sortBy: (a) => a.value, searchText: () => "" },
      { title: "Since", render: (a) => time(a.firedAt ?? a.activeAt), sortBy: (a) => a.firedAt ?? a.activeAt, searchText: () => "" },
      { title: "Silenced by", render: (a) => a.silencedBy ?? "—", sortBy: (a) => a.silencedBy ?? "" },
    ],
  });
  const rules = new DataTable<Rule>({
    caption: "Rules",
    key: (r) => r.metadata.name,
    empty: "No alert rules: `wharf alert apply -f rule.yaml` adds one.",
    columns: [
      { title: "Name", render: (r) => r.metadata.name, sortBy: (r) => r.metadata.name },
      { title: "Condition", render: (r) => h("span", { class: "mono" }, condition(r)), searchText: condition },
      { title: "Severity", render: (r) => r.spec.severity, sortBy: (r) => r.spec.severity },
      { title: "State", render: (r) => stateBadge(r.status.alerts?.some((a) => a.state === "firing") ? "firing" : r.status.alerts?.length ? "pending" : undefined), sortBy: (r) => r.status.alerts?.length ?? 0, searchText: () => "" },
      { title: "Evaluated", render: (r) => (r.status.error ? h("span", { class: "error" }, r.status.error) : time(r.status.evaluatedAt)), sortBy: (r) => r.status.evaluatedAt ?? 0, searchText: (r) => r.status.error ?? "" },
      {
        title: "Chart",
        render: (r) =>
          h(
            "button",
            {
              type: "button",
              class: "small",
              onclick: async () => {
                const chart = new LineChart(`${r.metadata.name}: ${r.spec.metric} (last hour)`);
                chartArea.replaceChildren(chart.element);
                try {
                  await ruleChart(r, chart, project);
                } catch (error) {
                  chartArea.append(errorNote(error));
                }
              },
            },
            "Show chart",
          ),
      },
    ],
  });
  const history = new DataTable<RuleTransition>({
    caption: "Recent transitions",
    initialDescending: true,
    empty: "No transitions recorded.",
    columns: [
      { title: "Time", render: (t) => time(t.at), sortBy: (t) => t.at, searchText: () => "" },
      { title: "Rule", render: (t) => t.rule, sortBy: (t) => t.rule },
      { title: "Change", render: (t) => `${t.from ?? "inactive"} → ${t.to ?? "inactive"}`, sortBy: (t) => t.to ?? "" },
      { title: "Labels", render: (t) => labels(t.labels), searchText: (t) => labelText(t.labels) },
      { title: "Value", render: (t) => t.value.toFixed(2), sortBy: (t) => t.value, searchText: () => "" },
    ],
  });
  const reload = h("button", { type: "button", class: "small", onclick: () => void load() }, "Reload");
  const note = h("div");
  main.append(h("div", { class: "table-tools" }, reload), note, h("h2", null, "Active alerts"), active.element, h("h2", null, "Rules"), rules.element, chartArea, h("h2", null, "History"), history.element);
  const load = async () => {
    note.replaceChildren();
    try {
      const list = await get<Rule[]>(`${base}/rules`);
      rules.setRows(list);
      active.setRows(list.flatMap((rule) => (rule.status.alerts ?? []).map((alert) => ({ ...alert, rule }))));
      history.setRows(list.flatMap((rule) => (rule.status.history ?? []).map((t) => ({ ...t, rule: rule.metadata.name }))));
    } catch (error) {
      note.replaceChildren(errorNote(error));
    }
  };
  await load();
}

export const alertsPage: Page = {
  title: () => "Alerts",
  async render({ main }) {
    main.append(heading("Cluster alerts"));
    await renderAlerts(main, null);
  },
};

export const projectAlertsPage: Page = {
  title: ({ project }) => `${project} · alerts`,
  async render({ main, params }) {
    if (!(await projectHeader(main, params.project))) return;
    main.append(projectTabs(params.project, "alerts"));
    await renderAlerts(main, params.project);
  },
};
