// System settings (system administrators): anonymous pulls from public
// projects, and where pods may mount hostPath volumes.

import { get, send } from "../api";
import { field, h } from "../dom";
import { Page } from "../router";
import { errorNote, heading, Status } from "../widgets";

interface Settings {
  anonymous_pull: boolean;
  host_path_prefixes: string[];
}

export const settingsPage: Page = {
  title: () => "Settings",
  async render({ main }) {
    main.append(heading("Settings"));
    let settings: Settings;
    try {
      settings = await get<Settings>("/settings");
    } catch (error) {
      main.append(errorNote(error));
      return;
    }
    const anonymous = h("input", { type: "checkbox", name: "anonymous_pull", checked: settings.anonymous_pull });
    const prefixes = h("textarea", { name: "host_path_prefixes", id: "host-path-prefixes", rows: 4, cols: 50 });
    prefixes.value = settings.host_path_prefixes.join("\n");
    const status = new Status();
    const form = h(
      "form",
      {
        class: "settings-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          status.clear();
          const next: Settings = {
            anonymous_pull: anonymous.checked,
            host_path_prefixes: prefixes.value
              .split("\n")
              .map((line) => line.trim())
              .filter(Boolean),
          };
          try {
            await send("PUT", "/settings", next);
            status.ok("Settings saved");
          } catch (error) {
            status.error(error);
          }
        },
      },
      field("Anonymous users may pull from public projects", anonymous),
      h(
        "div",
        { class: "field" },
        h("label", { for: prefixes.id }, "Node directories pods may mount as hostPath volumes (one absolute path per line; none refuses every hostPath)"),
        prefixes,
      ),
      h("button", { type: "submit" }, "Save settings"),
      status.element,
    );
    main.append(form);
  },
};
