// A project's pods: status, readiness, restarts, IP, node and owning
// deployment, kept current by the project's pods watch.

import { h } from "../dom";
import { age, millis } from "../format";
import { liveList } from "../live";
import { Pod, podDeployment, podStatus, readyText, restarts } from "../objects";
import { href, Page } from "../router";
import { Column, DataTable } from "../table";
import { errorNote } from "../widgets";
import { projectHeader, projectTabs } from "./project";

/** A pod's status with a class for its colour. */
export function podPhase(pod: Pod): HTMLElement {
  const status = podStatus(pod);
  const tone = status === "Running" || status === "Succeeded" ? "ok" : status === "Pending" || status === "ContainerCreating" || status === "Terminating" ? "wait" : "bad";
  return h("span", { class: `phase ${tone}`, title: pod.status?.message ?? "" }, status);
}

/** The pod list's columns; `withProject` adds the project (lists across projects). */
export function podColumns(withProject: boolean): Column<Pod>[] {
  const project = (p: Pod) => p.metadata.project ?? "";
  const columns: Column<Pod>[] = [
    { title: "Name", render: (p) => h("a", { href: href("projects", project(p), "pods", p.metadata.name) }, p.metadata.name), sortBy: (p) => p.metadata.name },
    { title: "Status", render: podPhase, sortBy: podStatus },
    { title: "Ready", render: readyText, sortBy: readyText },
    { title: "Restarts", render: restarts, sortBy: restarts, searchText: () => "" },
    { title: "IP", render: (p) => p.status?.podIP ?? "—", sortBy: (p) => p.status?.podIP ?? "" },
    {
      title: "Node",
      render: (p) => (p.spec.nodeName ? h("a", { href: href("nodes", p.spec.nodeName) }, p.spec.nodeName) : "unscheduled"),
      sortBy: (p) => p.spec.nodeName ?? "",
    },
    {
      title: "Deployment",
      render: (p) => {
        const owner = podDeployment(p);
        return owner ? h("a", { href: href("projects", project(p), "deployments", owner) }, owner) : "—";
      },
      sortBy: (p) => podDeployment(p) ?? "",
    },
    { title: "Age", render: (p) => age(millis(p.metadata.creationTimestamp)), sortBy: (p) => -millis(p.metadata.creationTimestamp), searchText: () => "" },
  ];
  if (withProject) columns.splice(1, 0, { title: "Project", render: (p) => h("a", { href: href("projects", project(p), "pods") }, project(p)), sortBy: project });
  return columns;
}

export const podsPage: Page = {
  title: ({ project }) => `${project} · pods`,
  async render({ main, params, signal }) {
    const project = params.project;
    if (!(await projectHeader(main, project))) return;
    const table = new DataTable<Pod>({ caption: `Pods of ${project}`, key: (p) => p.metadata.name, pageSize: 50, empty: "No pods: apply a deployment.", columns: podColumns(false) });
    main.append(projectTabs(project, "pods"), table.element);
    try {
      await liveList<Pod>(`/projects/${encodeURIComponent(project)}/pods`, (rows) => table.setRows(rows), signal);
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
