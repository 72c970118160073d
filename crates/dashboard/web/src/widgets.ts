// Small shared pieces of the pages: error notes, buttons that report the
// API's answer, copy-to-clipboard, headings.

import { ApiError } from "./api";
import { h } from "./dom";

/** The API's message for an error, as the API worded it. */
export function messageOf(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return String(error);
}

/** A note announcing an error to screen readers too. */
export function errorNote(error: unknown): HTMLElement {
  return h("p", { class: "error", role: "alert" }, messageOf(error));
}

/** A status area under a form: shows the outcome of its last action. */
export class Status {
  readonly element = h("div", { class: "status", "aria-live": "polite" });

  error(error: unknown): void {
    this.element.replaceChildren(errorNote(error));
  }

  ok(text: string): void {
    this.element.replaceChildren(h("p", { class: "ok" }, text));
  }

  clear(): void {
    this.element.replaceChildren();
  }
}

/** A read-only command with a Copy button (e.g. `docker pull ...`). */
export function copyable(label: string, text: string): HTMLElement {
  const input = h("input", { type: "text", readonly: true, value: text, "aria-label": label, class: "copy-text" });
  const result = h("span", { class: "copy-result", "aria-live": "polite" });
  const button = h(
    "button",
    {
      type: "button",
      onclick: async () => {
        try {
          await navigator.clipboard.writeText(text);
          result.textContent = "Copied";
        } catch {
          // No clipboard access (e.g. plain HTTP on another host): select
          // the text so that the keyboard's copy takes it.
          input.select();
          result.textContent = "Press Ctrl+C to copy";
        }
      },
    },
    "Copy",
  );
  return h("div", { class: "copyable" }, input, button, result);
}

/** A page heading with optional trailing content. */
export function heading(text: string, ...rest: (Node | string)[]): HTMLElement {
  return h("div", { class: "heading" }, h("h1", null, text), ...rest);
}
