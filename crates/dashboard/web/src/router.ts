// Client-side routes under /ui/: a table of path patterns to pages. Links
// are ordinary <a href="/ui/..."> (keyboard and middle-click work); clicks
// on them are turned into history navigation without a page load.

/** Path parameters of a route, decoded (`:repository` may hold `/`). */
export type Params = Record<string, string>;

/** What a page gets to render into. */
export interface PageContext {
  /** The main area, emptied before render. */
  main: HTMLElement;
  params: Params;
  /** The query string of the location. */
  query: URLSearchParams;
  /** Aborted when the user leaves the page: stop watches and timers then. */
  signal: AbortSignal;
}

/** One page: its document title and how it renders. */
export interface Page {
  title: (params: Params) => string;
  render: (context: PageContext) => Promise<void> | void;
}

interface Route {
  parts: string[];
  page: Page;
}

const routes: Route[] = [];

/** Registers `page` at `pattern` (`/ui/projects/:project`). */
export function route(pattern: string, page: Page): void {
  routes.push({ parts: pattern.split("/").filter(Boolean), page });
}

/** The page and parameters for `pathname`, if a route matches. */
export function match(pathname: string): { page: Page; params: Params } | null {
  const parts = pathname.split("/").filter(Boolean);
  for (const candidate of routes) {
    if (candidate.parts.length !== parts.length) continue;
    const params: Params = {};
    const fits = candidate.parts.every((part, index) => {
      if (part.startsWith(":")) {
        params[part.slice(1)] = decodeURIComponent(parts[index]);
        return true;
      }
      return part === parts[index];
    });
    if (fits) return { page: candidate.page, params };
  }
  return null;
}

/** The /ui/ path of a route with `values` encoded as path segments. */
export function href(...segments: string[]): string {
  return "/ui/" + segments.map(encodeURIComponent).join("/");
}

/** Goes to `path` (pushing it on the history) and renders it. */
export function navigate(path: string): void {
  history.pushState(null, "", path);
  window.dispatchEvent(new Event("wharf:navigate"));
}
