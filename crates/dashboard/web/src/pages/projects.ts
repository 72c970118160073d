// Projects: every project the user may see, with usage against quota, and
// a form to create one (the API decides who may).

import { get, send } from "../api";
import { field, h } from "../dom";
import { bytes, time, usage } from "../format";
import { href, navigate, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading, Status } from "../widgets";

/** A project as GET /api/v1/projects lists it. */
export interface Project {
  name: string;
  public: boolean;
  quota_bytes: number | null;
  usage_bytes: number;
  created_at: number;
  proxy_cache?: { endpoint: string };
}

export const projectsPage: Page = {
  title: () => "Projects",
  async render({ main }) {
    const table = new DataTable<Project>({
      caption: "Projects",
      key: (p) => p.name,
      empty: "No projects yet: create one below.",
      columns: [
        { title: "Name", render: (p) => h("a", { href: href("projects", p.name) }, p.name), sortBy: (p) => p.name },
        { title: "Access", render: (p) => (p.public ? "public" : "private"), sortBy: (p) => (p.public ? "public" : "private") },
        { title: "Usage", render: (p) => usage(p.usage_bytes, p.quota_bytes), sortBy: (p) => p.usage_bytes, searchText: () => "" },
        { title: "Quota", render: (p) => (p.quota_bytes ? bytes(p.quota_bytes) : "none"), sortBy: (p) => p.quota_bytes ?? Infinity, searchText: () => "" },
        { title: "Kind", render: (p) => (p.proxy_cache ? `proxy cache of ${p.proxy_cache.endpoint}` : "registry"), sortBy: (p) => (p.proxy_cache ? 1 : 0), searchText: (p) => (p.proxy_cache ? "proxy cache" : "") },
        { title: "Created", render: (p) => time(p.created_at), sortBy: (p) => p.created_at, searchText: () => "" },
      ],
    });
    main.append(heading("Projects"), table.element, createForm());
    try {
      table.setRows(await get<Project[]>("/projects"));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};

function createForm(): HTMLElement {
  const name = h("input", { name: "name", required: true, autocomplete: "off" });
  const isPublic = h("input", { type: "checkbox", name: "public" });
  const quota = h("input", { type: "number", name: "quota", min: "0", step: "any", placeholder: "no limit" });
  const status = new Status();
  const form = h(
    "form",
    {
      class: "inline-form",
      onsubmit: async (event: Event) => {
        event.preventDefault();
        status.clear();
        const gib = quota.value.trim();
        const body = {
          name: name.value.trim(),
          public: isPublic.checked,
          quota_bytes: gib === "" ? null : Math.round(Number(gib) * 1024 ** 3),
        };
        try {
          await send("POST", "/projects", body);
          navigate(href("projects", body.name));
        } catch (error) {
          status.error(error);
        }
      },
    },
    h("h2", null, "New project"),
    field("Name", name),
    field("Public (any logged-in user may pull)", isPublic),
    field("Quota (GiB)", quota),
    h("button", { type: "submit" }, "Create project"),
    status.element,
  );
  return form;
}
