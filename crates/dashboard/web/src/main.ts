// Entry point: finds the session, draws the frame (nav bar, current user),
// and renders the page of the current /ui/ path. Pages register below, one
// module each; adding one is a `route(...)` line and a nav link.

import { currentSession, logout, onUnauthorized, Session } from "./api";
import { h, replace } from "./dom";
import { match, navigate, route } from "./router";
import { alertsPage, projectAlertsPage } from "./pages/alerts";
import { artifactPage } from "./pages/artifact";
import { auditPage } from "./pages/audit";
import { costPage } from "./pages/cost";
import { deploymentPage } from "./pages/deployment";
import { deploymentsPage } from "./pages/deployments";
import { inventoryPage } from "./pages/inventory";
import { ipPoolPage, ipPoolsPage } from "./pages/ippools";
import { nodePage } from "./pages/node";
import { nodesPage } from "./pages/nodes";
import { podPage } from "./pages/pod";
import { podsPage } from "./pages/pods";
import { replicationJobPage, replicationPage } from "./pages/replication";
import { renderLogin } from "./pages/login";
import { membersPage } from "./pages/members";
import { projectPage } from "./pages/project";
import { projectsPage } from "./pages/projects";
import { repositoryPage } from "./pages/repository";
import { robotsPage } from "./pages/robots";
import { settingsPage } from "./pages/settings";
import { usersPage } from "./pages/users";
import { errorNote, messageOf } from "./widgets";

route("/ui", projectsPage);
route("/ui/projects", projectsPage);
route("/ui/projects/:project", projectPage);
route("/ui/projects/:project/members", membersPage);
route("/ui/projects/:project/robots", robotsPage);
route("/ui/projects/:project/repositories/:repository", repositoryPage);
route("/ui/projects/:project/repositories/:repository/artifacts/:reference", artifactPage);
route("/ui/projects/:project/deployments", deploymentsPage);
route("/ui/projects/:project/deployments/:name", deploymentPage);
route("/ui/projects/:project/pods", podsPage);
route("/ui/projects/:project/pods/:name", podPage);
route("/ui/projects/:project/alerts", projectAlertsPage);
route("/ui/nodes", nodesPage);
route("/ui/nodes/:node", nodePage);
route("/ui/ippools", ipPoolsPage);
route("/ui/ippools/:pool", ipPoolPage);
route("/ui/replication", replicationPage);
route("/ui/replication/jobs/:id", replicationJobPage);
route("/ui/alerts", alertsPage);
route("/ui/inventory", inventoryPage);
route("/ui/cost", costPage);
route("/ui/users", usersPage);
route("/ui/audit", auditPage);
route("/ui/settings", settingsPage);

const header = document.getElementById("top") as HTMLElement;
const main = document.getElementById("main") as HTMLElement;
let session: Session | null = null;
let leaving = new AbortController();

function drawNav(): void {
  if (!session) {
    header.replaceChildren();
    return;
  }
  const link = (path: string, label: string) => {
    const current = location.pathname === path || (path !== "/ui/" && location.pathname.startsWith(path));
    return h("a", { href: path, "aria-current": current ? "page" : null }, label);
  };
  const user = session.user;
  replace(
    header,
    h(
      "nav",
      { "aria-label": "main" },
      h("a", { href: "/ui/", class: "brand" }, "Wharf"),
      link("/ui/projects", "Projects"),
      link("/ui/nodes", "Nodes"),
      link("/ui/ippools", "IP pools"),
      session.admin ? link("/ui/replication", "Replication") : null,
      session.admin ? link("/ui/alerts", "Alerts") : null,
      link("/ui/inventory", "Clusters"),
      link("/ui/cost", "Cost"),
      session.admin ? link("/ui/users", "Users") : null,
      link("/ui/audit", "Audit log"),
      session.admin ? link("/ui/settings", "Settings") : null,
    ),
    h(
      "div",
      { class: "user" },
      h("span", { id: "current-user", title: session.admin ? "system administrator" : "user" }, user, session.admin ? " (admin)" : ""),
      h(
        "button",
        {
          type: "button",
          onclick: async () => {
            try {
              await logout();
            } catch (error) {
              // The cookie may be gone already; the login form follows anyway.
              console.warn(`logout: ${messageOf(error)}`);
            }
            session = null;
            render();
          },
        },
        "Log out",
      ),
    ),
  );
}

async function render(): Promise<void> {
  leaving.abort();
  leaving = new AbortController();
  drawNav();
  if (!session) {
    document.title = "Log in · Wharf";
    renderLogin(main, (started) => {
      session = started;
      render();
    });
    return;
  }
  const path = location.pathname === "/" ? "/ui/" : location.pathname;
  const found = match(path);
  main.replaceChildren();
  if (!found) {
    document.title = "Not found · Wharf";
    main.append(h("h1", null, "Not found"), h("p", null, `No page at ${path}.`));
    return;
  }
  document.title = `${found.page.title(found.params)} · Wharf`;
  main.setAttribute("aria-busy", "true");
  try {
    await found.page.render({ main, params: found.params, query: new URLSearchParams(location.search), signal: leaving.signal });
  } catch (error) {
    main.append(errorNote(error));
  } finally {
    main.removeAttribute("aria-busy");
  }
  main.focus({ preventScroll: true });
}

// Same-origin /ui/ links navigate in place; modified clicks keep the
// browser's behaviour (new tab, download).
document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const anchor = (event.target as Element).closest("a");
  if (!anchor || anchor.origin !== location.origin || !anchor.pathname.startsWith("/ui")) return;
  event.preventDefault();
  navigate(anchor.pathname + anchor.search);
});
window.addEventListener("popstate", () => render());
window.addEventListener("wharf:navigate", () => render());
onUnauthorized(() => {
  session = null;
  render();
});

(async () => {
  try {
    session = await currentSession();
  } catch (error) {
    main.replaceChildren(errorNote(error));
    return;
  }
  render();
})();
