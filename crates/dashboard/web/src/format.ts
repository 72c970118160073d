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

/** Unix milliseconds of an API time: RFC 3339 text or milliseconds. */
export function millis(value: string | number | null | undefined): number {
  if (value === null || value === undefined || value === "") return 0;
  return typeof value === "number" ? value : Date.parse(value) || 0;
}

/** `1500` millicores -> `1.5 cores`. */
export function cores(millicores: number): string {
  return millicores % 1000 === 0 ? `${millicores / 1000} cores` : `${(millicores / 1000).toFixed(2)} cores`;
}

/** How long ago `ms` was, shortly (`3m`, `2h`, `5d`), with the absolute time in the title. */
export function age(ms: number): HTMLElement | string {
  if (!ms) return "—";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  const text =
    seconds < 60 ? `${seconds}s` : seconds < 3600 ? `${Math.floor(seconds / 60)}m` : seconds < 86400 ? `${Math.floor(seconds / 3600)}h` : `${Math.floor(seconds / 86400)}d`;
  const iso = new Date(ms).toISOString();
  return h("time", { datetime: iso, title: `${local.format(new Date(ms))} (${iso})` }, text);
}

/** A labelled bar of `used` out of `total`, e.g. allocation against capacity. */
export function bar(label: string, used: number, total: number, text: string): HTMLElement {
  const percent = total > 0 ? Math.min(100, Math.round((used / total) * 100)) : 0;
  return h(
    "span",
    { class: "usage" },
    h("meter", { min: 0, max: total || 1, value: used, high: (total || 1) * 0.9, "aria-label": label }),
    ` ${text} (${percent}%)`,
  );
}

/** `key=value` labels as small badges. */
export function labels(values: Record<string, string> | undefined): HTMLElement {
  const entries = Object.entries(values ?? {});
  if (entries.length === 0) return h("span", { class: "muted" }, "none");
  return h("span", { class: "labels" }, ...entries.map(([k, v]) => h("code", { class: "label" }, v ? `${k}=${v}` : k)));
}

/** The text `labels` shows, for search. */
export function labelText(values: Record<string, string> | undefined): string {
  return Object.entries(values ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}
