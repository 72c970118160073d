// Users (system administrators): create, disable or enable, delete.

import { get, send } from "../api";
import { field, h } from "../dom";
import { time } from "../format";
import { Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading, Status } from "../widgets";

interface User {
  name: string;
  admin: boolean;
  disabled: boolean;
  created_at: number;
  inventory_role?: string;
}

export const usersPage: Page = {
  title: () => "Users",
  async render({ main }) {
    const status = new Status();
    const reload = async () => {
      try {
        table.setRows(await get<User[]>("/users"));
      } catch (error) {
        status.error(error);
      }
    };
    const act = async (method: string, path: string, body: unknown, done: string) => {
      status.clear();
      try {
        await send(method, path, body);
        status.ok(done);
      } catch (error) {
        status.error(error);
      }
      await reload();
    };
    const table: DataTable<User> = new DataTable<User>({
      caption: "Users",
      key: (u) => u.name,
      columns: [
        { title: "Name", render: (u) => u.name, sortBy: (u) => u.name },
        { title: "Administrator", render: (u) => (u.admin ? "yes" : "no"), sortBy: (u) => (u.admin ? 0 : 1), searchText: (u) => (u.admin ? "admin" : "") },
        { title: "Inventory role", render: (u) => u.inventory_role ?? "—", sortBy: (u) => u.inventory_role ?? "" },
        { title: "State", render: (u) => (u.disabled ? "disabled" : "enabled"), sortBy: (u) => (u.disabled ? 1 : 0) },
        { title: "Created", render: (u) => time(u.created_at), sortBy: (u) => u.created_at, searchText: () => "" },
        {
          title: "Actions",
          render: (u) => [
            h(
              "button",
              {
                type: "button",
                class: "small",
                onclick: () =>
                  act("PUT", `/users/${encodeURIComponent(u.name)}/disabled`, { disabled: !u.disabled }, `${u.name} ${u.disabled ? "enabled" : "disabled"}`),
              },
              u.disabled ? "Enable" : "Disable",
            ),
            " ",
            h(
              "button",
              {
                type: "button",
                class: "danger small",
                "aria-label": `delete user ${u.name}`,
                onclick: () => confirm(`Delete user ${u.name}?`) && act("DELETE", `/users/${encodeURIComponent(u.name)}`, undefined, `${u.name} deleted`),
              },
              "Delete",
            ),
          ],
        },
      ],
    });
    const name = h("input", { name: "name", required: true, autocomplete: "off" });
    const password = h("input", { type: "password", name: "password", required: true, autocomplete: "new-password" });
    const admin = h("input", { type: "checkbox", name: "admin" });
    const form = h(
      "form",
      {
        class: "inline-form",
        onsubmit: async (event: Event) => {
          event.preventDefault();
          await act("POST", "/users", { name: name.value.trim(), password: password.value, admin: admin.checked }, `user ${name.value.trim()} created`);
          password.value = "";
        },
      },
      h("h2", null, "New user"),
      field("Name", name),
      field("Password", password),
      field("System administrator", admin),
      h("button", { type: "submit" }, "Create user"),
    );
    main.append(heading("Users"), status.element, table.element, form);
    try {
      table.setRows(await get<User[]>("/users"));
    } catch (error) {
      main.append(errorNote(error));
    }
  },
};
