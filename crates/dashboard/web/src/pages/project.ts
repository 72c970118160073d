// One project: its repositories, members and robots, one tab each (each
// tab is its own route, so it can be linked and reloaded).

import { get, send } from "../api";
import { h } from "../dom";
import { bytes, time, usage } from "../format";
import { href, navigate, PageContext, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading, Status } from "../widgets";
import type { Project } from "./projects";

/** A repository as GET .../repositories lists it. */
interface Repository {
  /** The full name, `project/path`. */
  name: string;
  artifactCount: number;
  tagCount: number;
  sizeBytes: number;
  updatedAt: number;
}

/** The tabs of a project page. */
export function projectTabs(project: string, current: "repositories" | "members" | "robots" | "deployments" | "pods" | "alerts"): HTMLElement {
  const tab = (id: typeof current, label: string, path: string) =>
    h("a", { href: path, "aria-current": id === current ? "page" : null }, label);
  return h(
    "nav",
    { class: "tabs", "aria-label": `project ${project}` },
    tab("repositories", "Repositories", href("projects", project)),
    tab("members", "Members", href("projects", project, "members")),
    tab("robots", "Robots", href("projects", project, "robots")),
    tab("deployments", "Deployments", href("projects", project, "deployments")),
    tab("pods", "Pods", href("projects", project, "pods")),
    tab("alerts", "Alerts", href("projects", project, "alerts")),
  );
}

/** The project's heading with its usage, shared by its tabs. */
export async function projectHeader(main: HTMLElement, name: string): Promise<boolean> {
  try {
    const project = await get<Project>(`/projects/${encodeURIComponent(name)}`);
    const status = new Status();
    const remove = h(
      "button",
      {
        type: "button",
        class: "danger small",
        onclick: async () => {
          if (!confirm(`Delete project ${name}?`)) return;
          status.clear();
          try {
            await send("DELETE", `/projects/${encodeURIComponent(name)}`);
            navigate(href("projects"));
          } catch (error) {
            status.error(error);
          }
        },
      },
      "Delete project",
    );
    main.append(
      heading(`Project ${name}`, h("span", { class: "badge" }, project.public ? "public" : "private"), remove),
      h("p", null, "Storage: ", usage(project.usage_bytes, project.quota_bytes)),
      status.element,
    );
    return true;
  } catch (error) {
    main.append(heading(`Project ${name}`), errorNote(error));
    return false;
  }
}

/** The name of `repository` inside `project` (`shop/team/web` -> `team/web`). */
export function inner(project: string, repository: string): string {
  return repository.startsWith(`${project}/`) ? repository.slice(project.length + 1) : repository;
}

export const projectPage: Page = {
  title: ({ project }) => `${project} · repositories`,
  async render({ main, params }: PageContext) {
    const project = params.project;
    if (!(await projectHeader(main, project))) return;
    const base = `/projects/${encodeURIComponent(project)}/repositories`;
    const status = new Status();
    const table: DataTable<Repository> = new DataTable<Repository>({
      caption: `Repositories of ${project}`,
      key: (r) => r.name,
      empty: `No repositories yet: push one, e.g. docker push ${location.host}/${project}/app:v1`,
      columns: [
        {
          title: "Repository",
          render: (r) => h("a", { href: href("projects", project, "repositories", inner(project, r.name)) }, r.name),
          sortBy: (r) => r.name,
        },
        { title: "Tags", render: (r) => r.tagCount, sortBy: (r) => r.tagCount, searchText: () => "" },
        { title: "Artifacts", render: (r) => r.artifactCount, sortBy: (r) => r.artifactCount, searchText: () => "" },
        { title: "Size", render: (r) => bytes(r.sizeBytes), sortBy: (r) => r.sizeBytes, searchText: () => "" },
        { title: "Updated", render: (r) => time(r.updatedAt), sortBy: (r) => r.updatedAt, searchText: () => "" },
        {
          title: "Actions",
          render: (r) =>
            h(
              "button",
              {
                type: "button",
                class: "danger small",
                "aria-label": `delete repository ${r.name}`,
                onclick: async () => {
                  if (!confirm(`Delete ${r.name} with every artifact and tag in it?`)) return;
                  status.clear();
                  try {
                    await send("DELETE", `${base}/${encodeURIComponent(inner(project, r.name))}`);
                    status.ok(`${r.name} deleted`);
                  } catch (error) {
                    status.error(error);
                  }
                  try {
                    table.setRows(await get<Repository[]>(base));
                  } catch (error) {
                    status.error(error);
                  }
                },
              },
              "Delete",
            ),
        },
      ],
    });
    main.append(projectTabs(project, "repositories"), status.element, table.element);
    try {
      table.setRows(await get<Repository[]>(base));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
