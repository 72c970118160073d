// A project's deployments with their rollout state, kept current by the
// project's deployments watch.

import { h } from "../dom";
import { age, millis } from "../format";
import { liveList } from "../live";
import { Deployment, rolloutState } from "../objects";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { errorNote } from "../widgets";
import { projectHeader, projectTabs } from "./project";

/** The rollout state as a coloured badge with its detail in the title. */
export function rolloutBadge(deployment: Deployment): HTMLElement {
  const { state, detail } = rolloutState(deployment);
  const tone = state === "complete" ? "ok" : state === "failed" ? "bad" : "wait";
  return h("span", { class: `phase ${tone}`, title: detail }, state);
}

/** `ready/desired`. */
function replicas(d: Deployment): string {
  return `${d.status?.readyReplicas ?? 0}/${d.spec.replicas ?? 1}`;
}

export const deploymentsPage: Page = {
  title: ({ project }) => `${project} · deployments`,
  async render({ main, params, signal }) {
    const project = params.project;
    if (!(await projectHeader(main, project))) return;
    const table = new DataTable<Deployment>({
      caption: `Deployments of ${project}`,
      key: (d) => d.metadata.name,
      empty: "No deployments: `wharf apply -f deployment.yaml` creates one.",
      columns: [
        { title: "Name", render: (d) => h("a", { href: href("projects", project, "deployments", d.metadata.name) }, d.metadata.name), sortBy: (d) => d.metadata.name },
        { title: "Ready", render: (d) => h("a", { href: `${href("projects", project, "deployments", d.metadata.name)}#pods` }, replicas(d)), sortBy: (d) => d.status?.readyReplicas ?? 0, searchText: () => "" },
        { title: "Up to date", render: (d) => d.status?.updatedReplicas ?? 0, sortBy: (d) => d.status?.updatedReplicas ?? 0, searchText: () => "" },
        { title: "Available", render: (d) => d.status?.availableReplicas ?? 0, sortBy: (d) => d.status?.availableReplicas ?? 0, searchText: () => "" },
        { title: "Rollout", render: rolloutBadge, sortBy: (d) => rolloutState(d).state },
        { title: "Images", render: (d) => h("span", { class: "mono" }, d.spec.template.spec.containers.map((c) => c.image).join(", ")), sortBy: (d) => d.spec.template.spec.containers[0]?.image ?? "" },
        { title: "Age", render: (d) => age(millis(d.metadata.creationTimestamp)), sortBy: (d) => -millis(d.metadata.creationTimestamp), searchText: () => "" },
      ],
    });
    main.append(projectTabs(project, "deployments"), table.element);
    try {
      await liveList<Deployment>(`/projects/${encodeURIComponent(project)}/deployments`, (rows) => table.setRows(rows), signal);
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
