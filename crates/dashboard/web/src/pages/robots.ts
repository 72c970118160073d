// A project's robot accounts: create one (its secret is shown once, here,
// and never again), delete one.

import { get, send } from "../api";
import { field, h } from "../dom";
import { time } from "../format";
import { Page } from "../router";
import { DataTable } from "../table";
import { copyable, errorNote, Status } from "../widgets";
import { projectHeader, projectTabs } from "./project";

interface Robot {
  name: string;
  permissions: { project: string; actions: string[] }[];
  expires_at: number | null;
  disabled: boolean;
  created_by: string;
  created_at: number;
}

const ACTIONS = ["pull", "push", "delete"];

export const robotsPage: Page = {
  title: ({ project }) => `${project} · robots`,
  async render({ main, params }) {
    const project = params.project;
    if (!(await projectHeader(main, project))) return;
    const base = `/projects/${encodeURIComponent(project)}/robots`;
    const status = new Status();
    const secretBox = h("div", { class: "secret-box" });
    const reload = async () => {
      try {
        table.setRows(await get<Robot[]>(base));
      } catch (error) {
        status.error(error);
      }
    };
    const table: DataTable<Robot> = new DataTable<Robot>({
      caption: `Robots of ${project}`,
      key: (r) => r.name,
      empty: "No robot accounts.",
      columns: [
        { title: "Name", render: (r) => r.name, sortBy: (r) => r.name },
        {
          title: "Permissions",
          render: (r) => r.permissions.map((p) => `${p.project}: ${p.actions.join(", ")}`).join("; "),
          searchText: (r) => r.permissions.map((p) => p.actions.join(" ")).join(" "),
        },
        { title: "State", render: (r) => (r.disabled ? "disabled" : "enabled"), sortBy: (r) => (r.disabled ? 1 : 0) },
        { title: "Expires", render: (r) => (r.expires_at ? time(r.expires_at) : "never"), sortBy: (r) => r.expires_at ?? Infinity, searchText: () => "" },
        { title: "Created", render: (r) => h("span", null, time(r.created_at), ` by ${r.created_by}`), sortBy: (r) => r.created_at, searchText: (r) => r.created_by },
        {
          title: "Actions",
          render: (r) =>
            h(
              "button",
              {
                type: "button",
                class: "danger",
                "aria-label": `delete ${r.name}`,
                onclick: async () => {
                  if (!confirm(`Delete robot ${r.name}? Whatever uses its secret stops working.`)) return;
                  status.clear();
                  try {
                    await send("DELETE", `${base}/${encodeURIComponent(r.name)}`);
                    status.ok(`${r.name} deleted`);
                  } catch (error) {
                    status.error(error);
                  }
                  await reload();
                },
              },
              "Delete",
            ),
        },
      ],
    });

    const name = h("input", { name: "name", required: true, autocomplete: "off" });
    const boxes = ACTIONS.map((action) => h("input", { type: "checkbox", name: action, checked: action === "pull" }));
    const days = h("input", { type: "number", name: "days", min: "1", step: "1", placeholder: "never" });
    const form = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          status.clear();
          secretBox.replaceChildren();
          const actions = ACTIONS.filter((_, i) => boxes[i].checked).join(",");
          const body = {
            name: name.value.trim(),
            actions,
            expires_in_secs: days.value ? Number(days.value) * 86400 : null,
          };
          try {
            const created = await send<{ robot: Robot; secret: string }>("POST", base, body);
            showSecret(secretBox, created!.robot.name, created!.secret);
            name.value = "";
          } catch (error) {
            status.error(error);
          }
          await reload();
        },
      },
      h("h2", null, "New robot account"),
      field("Name", name),
      h("fieldset", null, h("legend", null, "Actions"), ...ACTIONS.map((action, i) => field(action, boxes[i]))),
      field("Expires after (days)", days),
      h("button", { type: "submit" }, "Create robot"),
    );
    main.append(projectTabs(project, "robots"), status.element, secretBox, table.element, form);
    try {
      table.setRows(await get<Robot[]>(base));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};

/** Shows a new robot's secret, once: it lives only in this box until dismissed. */
function showSecret(box: HTMLElement, robot: string, secret: string): void {
  const dismiss = h("button", { type: "button", onclick: () => box.replaceChildren() }, "I have stored it");
  box.replaceChildren(
    h(
      "section",
      { class: "secret", role: "alert", "aria-label": "robot secret" },
      h("h2", null, `Secret of ${robot}`),
      h("p", null, "Copy it now: Wharf keeps only its hash and cannot show it again."),
      copyable(`secret of ${robot}`, secret),
      copyable("login command", `docker login ${location.host} -u '${robot}'`),
      dismiss,
    ),
  );
  dismiss.focus();
}
