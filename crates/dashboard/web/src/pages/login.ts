// The login form: a password for a session cookie.

import { login, Session } from "../api";
import { field, h } from "../dom";
import { Status } from "../widgets";

/** Renders the login form; `onLogin` runs once the session is set. */
export function renderLogin(main: HTMLElement, onLogin: (session: Session) => void): void {
  const username = h("input", { name: "username", required: true, autocomplete: "username" });
  const password = h("input", { type: "password", name: "password", required: true, autocomplete: "current-password" });
  const status = new Status();
  const form = h(
    "form",
    {
      class: "login",
      onsubmit: async (event: Event) => {
        event.preventDefault();
        status.clear();
        try {
          onLogin(await login(username.value.trim(), password.value));
        } catch (error) {
          status.error(error);
          password.value = "";
          password.focus();
        }
      },
    },
    h("h1", null, "Log in to Wharf"),
    field("User", username),
    field("Password", password),
    h("button", { type: "submit" }, "Log in"),
    status.element,
  );
  main.replaceChildren(form);
  username.focus();
}
