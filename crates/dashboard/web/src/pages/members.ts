// A project's members: add a user with a role, change roles, remove.

import { get, send } from "../api";
import { field, h } from "../dom";
import { Page } from "../router";
import { DataTable } from "../table";
import { errorNote, Status } from "../widgets";
import { projectHeader, projectTabs } from "./project";

interface Member {
  project: string;
  user: string;
  role: string;
}

const ROLES = ["projectAdmin", "maintainer", "developer", "guest"];

function roleSelect(current: string, label: string): HTMLSelectElement {
  const select = h("select", { "aria-label": label });
  for (const role of ROLES) select.append(h("option", { value: role, selected: role === current }, role));
  return select;
}

export const membersPage: Page = {
  title: ({ project }) => `${project} · members`,
  async render({ main, params }) {
    const project = params.project;
    if (!(await projectHeader(main, project))) return;
    const base = `/projects/${encodeURIComponent(project)}/members`;
    const status = new Status();
    const reload = async () => {
      try {
        table.setRows(await get<Member[]>(base));
      } catch (error) {
        status.error(error);
      }
    };
    const setRole = async (user: string, role: string) => {
      status.clear();
      try {
        await send("PUT", `${base}/${encodeURIComponent(user)}`, { role });
        status.ok(`${user} is now ${role} of ${project}`);
      } catch (error) {
        status.error(error);
      }
      await reload();
    };
    const table: DataTable<Member> = new DataTable<Member>({
      caption: `Members of ${project}`,
      key: (m) => m.user,
      columns: [
        { title: "User", render: (m) => m.user, sortBy: (m) => m.user },
        {
          title: "Role",
          render: (m) => {
            const select = roleSelect(m.role, `role of ${m.user}`);
            select.addEventListener("change", () => setRole(m.user, select.value));
            return select;
          },
          sortBy: (m) => ROLES.indexOf(m.role),
          searchText: (m) => m.role,
        },
        {
          title: "Actions",
          render: (m) =>
            h(
              "button",
              {
                type: "button",
                class: "danger",
                "aria-label": `remove ${m.user}`,
                onclick: async () => {
                  if (!confirm(`Remove ${m.user} from ${project}?`)) return;
                  status.clear();
                  try {
                    await send("DELETE", `${base}/${encodeURIComponent(m.user)}`);
                    status.ok(`${m.user} removed from ${project}`);
                  } catch (error) {
                    status.error(error);
                  }
                  await reload();
                },
              },
              "Remove",
            ),
        },
      ],
    });
    const user = h("input", { name: "user", required: true, autocomplete: "off" });
    const role = roleSelect("developer", "role");
    role.id = "new-member-role";
    const form = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          await setRole(user.value.trim(), role.value);
          user.value = "";
        },
      },
      h("h2", null, "Add member"),
      field("User", user),
      h("div", { class: "field" }, h("label", { for: role.id }, "Role"), role),
      h("button", { type: "submit" }, "Add member"),
    );
    main.append(projectTabs(project, "members"), status.element, table.element, form);
    try {
      table.setRows(await get<Member[]>(base));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
