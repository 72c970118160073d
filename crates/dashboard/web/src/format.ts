// How values are shown: sizes in binary units, times in the user's zone
// with the absolute UTC time in the title.

import { h } from "./dom";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** `1536` -> `1.5 KiB`. */
export function bytes(value: number): string {
  let unit = 0;
  let scaled = value;
  while (scaled >= 1024 && unit < UNITS.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${scaled.toFixed(scaled < 10 ? 1 : 0)} ${UNITS[unit]}`;
}

const local = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** A `<time>` for unix milliseconds: local time shown, ISO UTC in the title. */
export function time(ms: number | null | undefined): HTMLElement | string {
  if (!ms) return "—";
  const date = new Date(ms);
  const iso = date.toISOString();
  return h("time", { datetime: iso, title: iso }, local.format(date));
}

/** `sha256:0123456789ab…` for a digest. */
export function shortDigest(digest: string): string {
  const [algorithm, hex] = digest.split(":");
  return hex ? `${algorithm}:${hex.slice(0, 12)}` : digest;
}

/** Usage against a quota as a labelled meter, or the usage alone. */
export function usage(used: number, quota: number | null | undefined): HTMLElement {
  if (!quota) return h("span", null, `${bytes(used)} (no quota)`);
  const percent = Math.min(100, Math.round((used / quota) * 100));
  return h(
    "span",
    { class: "usage" },
    h("meter", { min: 0, max: quota, value: used, high: quota * 0.9, "aria-label": "usage against quota" }),
    ` ${bytes(used)} of ${bytes(quota)} (${percent}%)`,
  );
}

const MEDIA_TYPES: Record<string, string> = {
  "application/vnd.oci.image.manifest.v1+json": "OCI image",
  "application/vnd.oci.image.index.v1+json": "OCI index",
  "application/vnd.docker.distribution.manifest.v2+json": "Docker image",
  "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
};

/** A short name for a manifest media type, the full type in the title. */
export function mediaType(type: string): HTMLElement {
  return h("span", { title: type }, MEDIA_TYPES[type] ?? type);
}
