// A repository's artifacts: tags, digest, size, push time, platforms and
// referrers; pull commands to copy; deleting a tag or an artifact where
// the API allows it (its refusal is shown otherwise).

import { get, send } from "../api";
import { h } from "../dom";
import { bytes, mediaType, shortDigest, time } from "../format";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { copyable, errorNote, heading, Status } from "../widgets";

/** An artifact as GET .../artifacts lists it. */
export interface Artifact {
  digest: string;
  mediaType: string;
  artifactType?: string;
  sizeBytes: number;
  pushedAt: number;
  tags: string[];
  platforms: string[];
  referrerCount: number;
}

/** The path of a repository's artifacts in the API. */
export function artifactsPath(project: string, repository: string): string {
  return `/projects/${encodeURIComponent(project)}/repositories/${encodeURIComponent(repository)}/artifacts`;
}

/** `docker pull HOST/project/repository:tag` (or `@digest`). */
export function pullCommand(project: string, repository: string, reference: string): string {
  const separator = reference.includes(":") ? "@" : ":";
  return `docker pull ${location.host}/${project}/${repository}${separator}${reference}`;
}

export const repositoryPage: Page = {
  title: ({ project, repository }) => `${project}/${repository}`,
  async render({ main, params }) {
    const { project, repository } = params;
    const base = artifactsPath(project, repository);
    const status = new Status();
    const remove = async (reference: string, what: string) => {
      if (!confirm(`Delete ${what}?`)) return;
      status.clear();
      try {
        await send("DELETE", `${base}/${encodeURIComponent(reference)}`);
        status.ok(`${what} deleted`);
      } catch (error) {
        status.error(error);
      }
      try {
        table.setRows(await get<Artifact[]>(base));
      } catch (error) {
        status.error(error);
      }
    };
    const tagCell = (a: Artifact) =>
      a.tags.length === 0
        ? h("span", { class: "muted" }, "untagged")
        : h(
            "ul",
            { class: "tags" },
            ...a.tags.map((tag) =>
              h(
                "li",
                null,
                h("a", { href: href("projects", project, "repositories", repository, "artifacts", tag) }, tag),
                " ",
                h(
                  "button",
                  { type: "button", class: "danger small", "aria-label": `delete tag ${tag}`, onclick: () => remove(tag, `tag ${repository}:${tag}`) },
                  "Delete tag",
                ),
              ),
            ),
          );
    const table: DataTable<Artifact> = new DataTable<Artifact>({
      caption: `Artifacts of ${project}/${repository}`,
      key: (a) => a.digest,
      initialSort: 4,
      initialDescending: true,
      columns: [
        { title: "Tags", render: tagCell, sortBy: (a) => a.tags[0] ?? "", searchText: (a) => a.tags.join(" ") },
        {
          title: "Digest",
          render: (a) =>
            h("a", { href: href("projects", project, "repositories", repository, "artifacts", a.digest), title: a.digest, class: "mono" }, shortDigest(a.digest)),
          sortBy: (a) => a.digest,
        },
        { title: "Type", render: (a) => (a.artifactType ? h("span", { title: a.mediaType }, a.artifactType) : mediaType(a.mediaType)), sortBy: (a) => a.artifactType ?? a.mediaType },
        { title: "Size", render: (a) => bytes(a.sizeBytes), sortBy: (a) => a.sizeBytes, searchText: () => "" },
        { title: "Pushed", render: (a) => time(a.pushedAt), sortBy: (a) => a.pushedAt, searchText: () => "" },
        { title: "Platforms", render: (a) => a.platforms.join(", ") || "—", sortBy: (a) => a.platforms.join(","), searchText: (a) => a.platforms.join(" ") },
        { title: "Referrers", render: (a) => a.referrerCount, sortBy: (a) => a.referrerCount, searchText: () => "" },
        {
          title: "Pull",
          render: (a) => copyable(`pull command of ${a.tags[0] ?? a.digest}`, pullCommand(project, repository, a.tags[0] ?? a.digest)),
        },
        {
          title: "Actions",
          render: (a) =>
            h(
              "button",
              { type: "button", class: "danger small", "aria-label": `delete artifact ${a.digest}`, onclick: () => remove(a.digest, `artifact ${shortDigest(a.digest)} and its tags`) },
              "Delete",
            ),
        },
      ],
    });
    main.append(
      heading(`${project}/${repository}`),
      h("p", null, h("a", { href: href("projects", project) }, `← repositories of ${project}`)),
      status.element,
      table.element,
    );
    try {
      table.setRows(await get<Artifact[]>(base));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
