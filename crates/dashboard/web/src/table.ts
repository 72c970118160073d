// The shared table: client-side search, sort by any sortable column and
// paging, for every list page. Columns say how to render, sort and search
// their values; the table keeps its own state and re-renders its body only.

import { Child, h, replace, uid } from "./dom";

/** One column of a DataTable. */
export interface Column<T> {
  /** Header text. */
  title: string;
  /** The cell's content. */
  render: (row: T) => Child;
  /** The value to sort by; the column is not sortable without it. */
  sortBy?: (row: T) => string | number;
  /** Text the search box matches; defaults to the sort value. */
  searchText?: (row: T) => string;
}

/** Options of a DataTable. */
export interface TableOptions<T> {
  /** Accessible name of the table (its caption). */
  caption: string;
  columns: Column<T>[];
  /** Rows per page. */
  pageSize?: number;
  /** Index of the column sorted by first. */
  initialSort?: number;
  /** Whether that first sort is descending (e.g. newest first). */
  initialDescending?: boolean;
  /** Shown when there are no rows at all. */
  empty?: string;
  /** A stable key per row, for test hooks and focus (`data-key`). */
  key?: (row: T) => string;
}

/** A table with search, sort and paging over rows held in memory. */
export class DataTable<T> {
  readonly element: HTMLElement;
  private rows: T[] = [];
  private query = "";
  private sortColumn: number;
  private ascending = true;
  private page = 0;
  private readonly body: HTMLTableSectionElement;
  private readonly head: HTMLTableRowElement;
  private readonly pager: HTMLElement;
  private readonly pageSize: number;

  constructor(private readonly options: TableOptions<T>) {
    this.pageSize = options.pageSize ?? 25;
    this.sortColumn = options.initialSort ?? 0;
    this.ascending = !options.initialDescending;
    const searchId = uid("search");
    const search = h("input", {
      id: searchId,
      type: "search",
      placeholder: "Filter",
      oninput: (event: Event) => {
        this.query = (event.target as HTMLInputElement).value.trim().toLowerCase();
        this.page = 0;
        this.renderBody();
      },
    });
    this.head = h("tr");
    this.body = h("tbody");
    this.pager = h("nav", { class: "pager", "aria-label": `${options.caption} pages` });
    this.element = h(
      "div",
      { class: "data-table" },
      h("div", { class: "table-tools" }, h("label", { for: searchId }, "Search "), search),
      h("div", { class: "table-scroll" }, h("table", null, h("caption", null, options.caption), h("thead", null, this.head), this.body)),
      this.pager,
    );
    this.renderHead();
  }

  /** Replaces the rows (e.g. after a reload), keeping search, sort and page where possible. */
  setRows(rows: T[]): void {
    this.rows = rows;
    this.renderBody();
  }

  private renderHead(): void {
    const cells = this.options.columns.map((column, index) => {
      if (!column.sortBy) return h("th", { scope: "col" }, column.title);
      const sorted = index === this.sortColumn;
      const button = h(
        "button",
        {
          type: "button",
          class: "sort",
          onclick: () => {
            this.ascending = sorted ? !this.ascending : true;
            this.sortColumn = index;
            this.renderHead();
            this.renderBody();
          },
        },
        column.title,
        sorted ? (this.ascending ? " ▲" : " ▼") : "",
      );
      const sort = sorted ? (this.ascending ? "ascending" : "descending") : "none";
      return h("th", { scope: "col", "aria-sort": sort }, button);
    });
    replace(this.head, ...cells);
  }

  private visibleRows(): T[] {
    const columns = this.options.columns;
    let rows = this.rows;
    if (this.query) {
      rows = rows.filter((row) =>
        columns.some((column) => {
          const text = column.searchText?.(row) ?? column.sortBy?.(row);
          return text !== undefined && String(text).toLowerCase().includes(this.query);
        }),
      );
    }
    const sortBy = columns[this.sortColumn]?.sortBy;
    if (sortBy) {
      const direction = this.ascending ? 1 : -1;
      rows = [...rows].sort((a, b) => {
        const x = sortBy(a);
        const y = sortBy(b);
        return (x < y ? -1 : x > y ? 1 : 0) * direction;
      });
    }
    return rows;
  }

  private renderBody(): void {
    const rows = this.visibleRows();
    const pages = Math.max(1, Math.ceil(rows.length / this.pageSize));
    this.page = Math.min(this.page, pages - 1);
    const shown = rows.slice(this.page * this.pageSize, (this.page + 1) * this.pageSize);
    const columns = this.options.columns;
    if (shown.length === 0) {
      const text = this.rows.length === 0 ? (this.options.empty ?? "Nothing here yet.") : "No match.";
      replace(this.body, h("tr", null, h("td", { colspan: columns.length, class: "empty" }, text)));
    } else {
      replace(
        this.body,
        ...shown.map((row) =>
          h("tr", { "data-key": this.options.key?.(row) }, ...columns.map((column) => h("td", null, column.render(row)))),
        ),
      );
    }
    const go = (page: number) => () => {
      this.page = page;
      this.renderBody();
    };
    replace(
      this.pager,
      h("button", { type: "button", disabled: this.page === 0, onclick: go(this.page - 1) }, "Previous"),
      h("span", { "aria-live": "polite" }, ` Page ${this.page + 1} of ${pages} (${rows.length} rows) `),
      h("button", { type: "button", disabled: this.page >= pages - 1, onclick: go(this.page + 1) }, "Next"),
    );
  }
}
