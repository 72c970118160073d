// The audit log with filters (administrators see everything; project
// administrators their project's events when they name it). The filters
// live in the query string so a filtered view can be linked.

import { get } from "../api";
import { field, h } from "../dom";
import { time } from "../format";
import { navigate, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading } from "../widgets";

interface AuditEvent {
  at_ms: number;
  actor: string;
  source?: string;
  action: string;
  resource: string;
  outcome: string;
  detail?: string;
}

const FILTERS = ["actor", "action", "project", "resource", "outcome"] as const;

export const auditPage: Page = {
  title: () => "Audit log",
  async render({ main, query }) {
    const inputs = FILTERS.map((name) => {
      if (name === "outcome") {
        const select = h("select", { name });
        for (const value of ["", "success", "denied", "failed"]) {
          select.append(h("option", { value, selected: query.get(name) === value }, value || "any"));
        }
        return select;
      }
      return h("input", { name, value: query.get(name) ?? "", autocomplete: "off" });
    });
    const labels: Record<string, string> = { actor: "Actor", action: "Action", project: "Project", resource: "Resource starts with", outcome: "Outcome" };
    const form = h(
      "form",
      {
        class: "inline-form filters",
        onsubmit: (event: Event) => {
          event.preventDefault();
          const next = new URLSearchParams();
          inputs.forEach((input, i) => input.value && next.set(FILTERS[i], input.value.trim()));
          navigate(`/ui/audit${next.size ? `?${next}` : ""}`);
        },
      },
      ...inputs.map((input, i) => field(labels[FILTERS[i]], input)),
      h("button", { type: "submit" }, "Filter"),
    );
    const table = new DataTable<AuditEvent>({
      caption: "Audit events",
      pageSize: 50,
      initialDescending: true,
      columns: [
        { title: "Time", render: (e) => time(e.at_ms), sortBy: (e) => e.at_ms, searchText: () => "" },
        { title: "Actor", render: (e) => e.actor, sortBy: (e) => e.actor },
        { title: "Source", render: (e) => e.source ?? "—", sortBy: (e) => e.source ?? "" },
        { title: "Action", render: (e) => e.action, sortBy: (e) => e.action },
        { title: "Resource", render: (e) => e.resource, sortBy: (e) => e.resource },
        { title: "Outcome", render: (e) => h("span", { class: `outcome ${e.outcome}` }, e.outcome), sortBy: (e) => e.outcome },
        { title: "Detail", render: (e) => e.detail ?? "", searchText: (e) => e.detail ?? "" },
      ],
    });
    main.append(heading("Audit log"), form, table.element);
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = query.get(name);
      if (value) params.set(name, value);
    }
    params.set("limit", "1000");
    try {
      table.setRows(await get<AuditEvent[]>(`/audit?${params}`));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
