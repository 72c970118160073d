// One deployment: replicas, rollout state and conditions (live from the
// deployments watch), its revisions, and its pods (live from the pods
// watch, by the deployment's selector).

import { get } from "../api";
import { h, replace } from "../dom";
import { labels, millis, time } from "../format";
import { liveList, watch } from "../live";
import { Deployment, Pod, rolloutState } from "../objects";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading } from "../widgets";
import { rolloutBadge } from "./deployments";
import { podColumns } from "./pods";

/** A revision as GET .../revisions lists it. */
interface Revision {
  revision: number;
  changeCause?: string;
  metadata: { creationTimestamp?: string | number };
  template: { spec: { containers: Array<{ name: string; image: string }> } };
}

function details(d: Deployment): HTMLElement {
  const status = d.status ?? {};
  return h(
    "div",
    null,
    h(
      "dl",
      { class: "pairs" },
      h("dt", null, "Rollout"),
      h("dd", { id: "rollout-state" }, rolloutBadge(d), ` ${rolloutState(d).detail}`),
      h("dt", null, "Replicas"),
      h("dd", null, `${d.spec.replicas ?? 1} desired, ${status.updatedReplicas ?? 0} up to date, ${status.readyReplicas ?? 0} ready, ${status.availableReplicas ?? 0} available, ${status.unavailableReplicas ?? 0} unavailable`),
      h("dt", null, "Selector"),
      h("dd", null, labels(d.spec.selector?.matchLabels)),
      h("dt", null, "Images"),
      h("dd", { class: "mono" }, d.spec.template.spec.containers.map((c) => `${c.name}: ${c.image}`).join(", ")),
      h("dt", null, "Created"),
      h("dd", null, time(millis(d.metadata.creationTimestamp))),
    ),
    h(
      "table",
      null,
      h("caption", null, "Conditions"),
      h("thead", null, h("tr", null, ...["Type", "Status", "Reason", "Message", "Updated"].map((t) => h("th", { scope: "col" }, t)))),
      h(
        "tbody",
        null,
        ...(status.conditions ?? []).map((c) =>
          h("tr", null, h("td", null, c.type), h("td", null, c.status), h("td", null, c.reason ?? ""), h("td", null, c.message ?? ""), h("td", null, time(millis(c.lastUpdateTime)))),
        ),
      ),
    ),
  );
}

export const deploymentPage: Page = {
  title: ({ name }) => `Deployment ${name}`,
  async render({ main, params, signal }) {
    const { project, name } = params;
    const base = `/projects/${encodeURIComponent(project)}`;
    const deployment = await get<Deployment>(`${base}/deployments/${encodeURIComponent(name)}`);
    const summary = h("section", { "aria-label": "deployment details" }, details(deployment));
    const pods = new DataTable<Pod>({ caption: `Pods of ${name}`, key: (p) => p.metadata.name, empty: "No pods yet.", columns: podColumns(false) });
    const revisions = new DataTable<Revision>({
      caption: "Revisions",
      initialDescending: true,
      columns: [
        { title: "Revision", render: (r) => r.revision, sortBy: (r) => r.revision },
        { title: "Images", render: (r) => h("span", { class: "mono" }, r.template.spec.containers.map((c) => c.image).join(", ")), searchText: (r) => r.template.spec.containers.map((c) => c.image).join(" ") },
        { title: "Change cause", render: (r) => r.changeCause ?? "—", sortBy: (r) => r.changeCause ?? "" },
        { title: "Created", render: (r) => time(millis(r.metadata.creationTimestamp)), sortBy: (r) => millis(r.metadata.creationTimestamp), searchText: () => "" },
      ],
    });
    main.append(
      heading(`Deployment ${name}`, h("a", { href: href("projects", project, "deployments") }, `all deployments of ${project}`)),
      summary,
      h("h2", { id: "pods" }, "Pods"),
      pods.element,
      h("h2", null, "Revisions"),
      revisions.element,
    );
    const loadRevisions = async () => {
      try {
        revisions.setRows((await get<{ items: Revision[] }>(`${base}/deployments/${encodeURIComponent(name)}/revisions`)).items);
      } catch (error) {
        main.append(errorNote(error));
      }
    };
    void watch<Deployment>(`${base}/deployments`, deployment.metadata.resourceVersion ?? 0, (event) => {
      if (event.object.metadata.name !== name) return;
      if (event.type === "DELETED") {
        replace(summary, h("p", { class: "muted" }, "This deployment has been deleted."));
        return;
      }
      // A new generation is a new template: its revision appears.
      if (event.object.metadata.generation !== deployment.metadata.generation) void loadRevisions();
      Object.assign(deployment, event.object);
      replace(summary, details(event.object));
    }, signal);
    await loadRevisions();
    const selector = Object.entries(deployment.spec.selector?.matchLabels ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(",");
    try {
      await liveList<Pod>(`${base}/pods${selector ? `?labelSelector=${encodeURIComponent(selector)}` : ""}`, (rows) => pods.setRows(rows.filter((p) => p.metadata.ownerReferences?.some((o) => o.kind === "Deployment" && o.name === name))), signal);
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
