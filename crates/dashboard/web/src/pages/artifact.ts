// One artifact: summary, pull command, platforms of an index, layers,
// config, labels, annotations and referrers (signatures, SBOMs).

import { get } from "../api";
import { h } from "../dom";
import { bytes, shortDigest, time } from "../format";
import { href, Page } from "../router";
import { DataTable } from "../table";
import { copyable, errorNote, heading } from "../widgets";
import { Artifact, artifactsPath, pullCommand } from "./repository";

interface Blob {
  digest: string;
  mediaType: string;
  size: number;
}

interface Detail extends Artifact {
  repository: string;
  config?: Blob;
  layers?: Blob[];
  manifests?: { digest: string; mediaType: string; size: number; platform?: string }[];
  annotations?: Record<string, string>;
  imageConfig?: { config?: { Labels?: Record<string, string> } };
  created?: string;
  referrers?: { digest: string; artifactType?: string; size: number }[];
}

function keyValues(caption: string, values: Record<string, string> | undefined): HTMLElement | null {
  const entries = Object.entries(values ?? {});
  if (entries.length === 0) return null;
  return h(
    "section",
    null,
    h("h2", null, caption),
    h("dl", { class: "pairs" }, ...entries.flatMap(([key, value]) => [h("dt", null, key), h("dd", null, value)])),
  );
}

export const artifactPage: Page = {
  title: ({ repository, reference }) => `${repository}:${reference}`,
  async render({ main, params }) {
    const { project, repository, reference } = params;
    const link = (digest: string) =>
      h("a", { href: href("projects", project, "repositories", repository, "artifacts", digest), class: "mono", title: digest }, shortDigest(digest));
    main.append(
      heading(`${project}/${repository}`, h("span", { class: "badge mono" }, reference)),
      h("p", null, h("a", { href: href("projects", project, "repositories", repository) }, `← artifacts of ${project}/${repository}`)),
    );
    let detail: Detail;
    try {
      detail = await get<Detail>(`${artifactsPath(project, repository)}/${encodeURIComponent(reference)}`);
    } catch (error) {
      main.append(errorNote(error));
      return;
    }
    main.append(
      h(
        "dl",
        { class: "pairs summary" },
        h("dt", null, "Digest"),
        h("dd", { class: "mono" }, detail.digest),
        h("dt", null, "Media type"),
        h("dd", null, detail.artifactType ? `${detail.artifactType} (${detail.mediaType})` : detail.mediaType),
        h("dt", null, "Size"),
        h("dd", null, bytes(detail.sizeBytes)),
        h("dt", null, "Pushed"),
        h("dd", null, time(detail.pushedAt)),
        detail.created ? [h("dt", null, "Created"), h("dd", null, time(Date.parse(detail.created)))] : null,
        h("dt", null, "Tags"),
        h("dd", null, detail.tags.join(", ") || "untagged"),
        h("dt", null, "Platforms"),
        h("dd", null, detail.platforms.join(", ") || "—"),
      ),
      copyable("pull command", pullCommand(project, repository, detail.tags.includes(reference) ? reference : detail.digest)),
    );
    if (detail.manifests?.length) {
      const platforms = new DataTable<NonNullable<Detail["manifests"]>[number]>({
        caption: "Platforms",
        key: (m) => m.digest,
        columns: [
          { title: "Platform", render: (m) => m.platform ?? "—", sortBy: (m) => m.platform ?? "" },
          { title: "Manifest", render: (m) => link(m.digest), sortBy: (m) => m.digest },
          { title: "Size", render: (m) => bytes(m.size), sortBy: (m) => m.size, searchText: () => "" },
        ],
      });
      platforms.setRows(detail.manifests);
      main.append(h("h2", null, "Platforms"), platforms.element);
    }
    if (detail.layers?.length) {
      const layers = new DataTable<Blob & { index: number }>({
        caption: "Layers",
        key: (l) => l.digest,
        pageSize: 50,
        columns: [
          { title: "#", render: (l) => l.index + 1, sortBy: (l) => l.index, searchText: () => "" },
          { title: "Digest", render: (l) => h("span", { class: "mono", title: l.digest }, shortDigest(l.digest)), sortBy: (l) => l.digest },
          { title: "Media type", render: (l) => l.mediaType, sortBy: (l) => l.mediaType },
          { title: "Size", render: (l) => bytes(l.size), sortBy: (l) => l.size, searchText: () => "" },
        ],
      });
      layers.setRows(detail.layers.map((layer, index) => ({ ...layer, index })));
      const total = detail.layers.reduce((sum, l) => sum + l.size, 0);
      main.append(h("h2", null, `Layers (${detail.layers.length}, ${bytes(total)})`), layers.element);
    }
    if (detail.config) {
      main.append(h("h2", null, "Config"), h("p", { class: "mono" }, `${detail.config.digest} · ${detail.config.mediaType} · ${bytes(detail.config.size)}`));
    }
    main.append(keyValues("Labels", detail.imageConfig?.config?.Labels) ?? "", keyValues("Annotations", detail.annotations) ?? "");
    const referrers = new DataTable<NonNullable<Detail["referrers"]>[number]>({
      caption: "Referrers (signatures, SBOMs, attestations)",
      key: (r) => r.digest,
      empty: "No referrers.",
      columns: [
        { title: "Type", render: (r) => r.artifactType ?? "—", sortBy: (r) => r.artifactType ?? "" },
        { title: "Digest", render: (r) => link(r.digest), sortBy: (r) => r.digest },
        { title: "Size", render: (r) => bytes(r.size), sortBy: (r) => r.size, searchText: () => "" },
      ],
    });
    referrers.setRows(detail.referrers ?? []);
    main.append(h("h2", null, "Referrers"), referrers.element);
  },
};
