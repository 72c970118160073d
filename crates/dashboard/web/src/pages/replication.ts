// Replication (administrators): endpoints with a connection check,
// policies with a run button, and jobs with their progress. A job that is
// still pending or running is followed through its watch in the API
// (`/replication/jobs/ID?watch=true`, one long request that sends the job
// again whenever it or one of its tasks changes and ends when the job is
// final); nothing is read while all shown jobs are final.

import { get, send } from "../api";
import { watch } from "../live";
import { h } from "../dom";
import { bytes, time } from "../format";
import { href, navigate, Page } from "../router";
import { DataTable } from "../table";
import { errorNote, heading, Status } from "../widgets";

interface Endpoint {
  name: string;
  url: string;
  kind: string;
  username?: string;
  createdAt: number;
}

interface Policy {
  name: string;
  endpoint: string;
  direction: string;
  filters: { projects?: string[]; repository?: string; tag?: string; label?: string };
  triggers: { onEvent?: boolean; cron?: string };
  enabled: boolean;
  concurrency: number;
  bandwidthLimit?: number;
}

interface Progress {
  succeeded: number;
  skipped: number;
  failed: number;
  cancelled: number;
  remaining: number;
  bytesDone: number;
}

/** A job as the jobs list shows it. */
export interface JobSummary {
  id: string;
  policy: string;
  trigger: string;
  state: string;
  createdAt: number;
  finishedAt?: number;
  tasks: number;
  error?: string;
  progress: Progress;
}

interface Task {
  index: number;
  kind: string;
  repository: string;
  reference: string;
  destination: string;
  state: string;
  attempts: number;
  bytesTotal: number;
  bytesDone: number;
  message?: string;
  updatedAt: number;
}

interface JobDetail extends Omit<JobSummary, "progress"> {
  taskList: Task[];
}

const isFinal = (state: string) => state !== "pending" && state !== "running";

/** A job state as a coloured badge. */
export function stateBadge(state: string): HTMLElement {
  const tone = state === "succeeded" || state === "skipped" ? "ok" : state === "failed" || state === "cancelled" ? "bad" : "wait";
  return h("span", { class: `phase ${tone}` }, state);
}

function jobProgress(job: JobSummary): HTMLElement {
  const p = job.progress;
  const done = p.succeeded + p.skipped + p.failed + p.cancelled;
  const total = Math.max(job.tasks, done + p.remaining);
  return h(
    "span",
    { class: "usage" },
    h("progress", { max: total || 1, value: done, "aria-label": `tasks done of job ${job.id}` }),
    ` ${done}/${total} tasks (${p.failed} failed), ${bytes(p.bytesDone)}`,
  );
}

/**
 * Follows job `id` through its watch, calling `onDetail` with each version
 * of it (and `status.error` with an error line's message, as the API
 * worded it), until the job is final or `signal` aborts. A dropped stream
 * is resumed by `watch`, which first sends the job as it is then.
 */
function followJob(id: string, onDetail: (job: JobDetail) => void, status: Status, signal: AbortSignal): void {
  const following = new AbortController();
  signal.addEventListener("abort", () => following.abort(), { once: true });
  // A job has no resourceVersion: each (re)connection sends it as it is.
  void watch<JobDetail & { metadata?: undefined }>(
    `/replication/jobs/${encodeURIComponent(id)}`,
    0,
    (event) => {
      if (event.type === "ERROR") {
        status.error(new Error((event.object as unknown as { message: string }).message));
        return;
      }
      onDetail(event.object);
      if (isFinal(event.object.state)) following.abort();
    },
    following.signal,
  );
}

/** The jobs list's row of a job detail: its task counts and bytes. */
function summaryOf(job: JobDetail): JobSummary {
  const progress: Progress = { succeeded: 0, skipped: 0, failed: 0, cancelled: 0, remaining: 0, bytesDone: 0 };
  for (const task of job.taskList) {
    progress.bytesDone += task.bytesDone;
    if (task.state === "succeeded") progress.succeeded++;
    else if (task.state === "skipped") progress.skipped++;
    else if (task.state === "failed") progress.failed++;
    else if (task.state === "cancelled") progress.cancelled++;
    else progress.remaining++;
  }
  const { id, policy, trigger, state, createdAt, finishedAt, tasks, error } = job;
  return { id, policy, trigger, state, createdAt, finishedAt, tasks, error, progress };
}

export const replicationPage: Page = {
  title: () => "Replication",
  async render({ main, signal }) {
    const status = new Status();
    const endpoints = new DataTable<Endpoint>({
      caption: "Endpoints",
      key: (e) => e.name,
      empty: "No endpoints: `wharf replication endpoint add` adds one.",
      columns: [
        { title: "Name", render: (e) => e.name, sortBy: (e) => e.name },
        { title: "URL", render: (e) => h("span", { class: "mono" }, e.url), sortBy: (e) => e.url },
        { title: "Kind", render: (e) => e.kind, sortBy: (e) => e.kind },
        { title: "Account", render: (e) => e.username ?? "anonymous", sortBy: (e) => e.username ?? "" },
        { title: "Created", render: (e) => time(e.createdAt), sortBy: (e) => e.createdAt, searchText: () => "" },
        {
          title: "Connection",
          render: (e) => {
            const result = h("span", { class: "check-result", "aria-live": "polite" });
            const button = h(
              "button",
              {
                type: "button",
                class: "small",
                onclick: async () => {
                  result.replaceChildren("checking…");
                  try {
                    const check = await send<{ reachable: boolean; instance?: string }>("POST", `/replication/endpoints/${encodeURIComponent(e.name)}/check`);
                    result.replaceChildren(h("span", { class: "ok" }, check?.instance ? `reachable (${check.instance})` : "reachable"));
                  } catch (error) {
                    result.replaceChildren(errorNote(error));
                  }
                },
              },
              "Check",
            );
            return h("span", null, button, " ", result);
          },
        },
      ],
    });
    const policies = new DataTable<Policy>({
      caption: "Policies",
      key: (p) => p.name,
      empty: "No policies.",
      columns: [
        { title: "Name", render: (p) => p.name, sortBy: (p) => p.name },
        { title: "Endpoint", render: (p) => p.endpoint, sortBy: (p) => p.endpoint },
        { title: "Direction", render: (p) => p.direction, sortBy: (p) => p.direction },
        {
          title: "Filters",
          render: (p) =>
            [
              ...(p.filters.projects ?? []).map((x) => `project ${x}`),
              p.filters.repository ? `repository ${p.filters.repository}` : "",
              p.filters.tag ? `tag ${p.filters.tag}` : "",
              p.filters.label ? `label ${p.filters.label}` : "",
            ]
              .filter(Boolean)
              .join(", ") || "everything",
          searchText: (p) => JSON.stringify(p.filters),
        },
        { title: "Triggers", render: (p) => [p.triggers.onEvent ? "on push" : "", p.triggers.cron ? `cron ${p.triggers.cron}` : ""].filter(Boolean).join(", ") || "manual", searchText: () => "" },
        { title: "Enabled", render: (p) => (p.enabled ? "yes" : "no"), sortBy: (p) => (p.enabled ? 1 : 0) },
        {
          title: "Run",
          render: (p) =>
            h(
              "button",
              {
                type: "button",
                class: "small",
                disabled: !p.enabled,
                onclick: async () => {
                  status.clear();
                  try {
                    const job = await send<{ id: string }>("POST", `/replication/policies/${encodeURIComponent(p.name)}/run`);
                    if (job) navigate(href("replication", "jobs", job.id));
                  } catch (error) {
                    status.error(error);
                  }
                },
              },
              "Run now",
            ),
        },
      ],
    });
    let jobRows: JobSummary[] = [];
    const jobs = new DataTable<JobSummary>({
      caption: "Jobs",
      key: (j) => j.id,
      initialDescending: true,
      empty: "No jobs have run.",
      columns: [
        { title: "Started", render: (j) => time(j.createdAt), sortBy: (j) => j.createdAt, searchText: () => "" },
        { title: "Job", render: (j) => h("a", { href: href("replication", "jobs", j.id) }, j.id), sortBy: (j) => j.id },
        { title: "Policy", render: (j) => j.policy, sortBy: (j) => j.policy },
        { title: "Trigger", render: (j) => j.trigger, sortBy: (j) => j.trigger },
        { title: "State", render: (j) => stateBadge(j.state), sortBy: (j) => j.state },
        { title: "Progress", render: jobProgress, searchText: () => "" },
        { title: "Error", render: (j) => j.error ?? "", searchText: (j) => j.error ?? "" },
      ],
    });
    main.append(heading("Replication"), status.element, h("h2", null, "Endpoints"), endpoints.element, h("h2", null, "Policies"), policies.element, h("h2", null, "Jobs"), jobs.element);
    const readJobs = async () => {
      try {
        jobRows = (await get<{ items: JobSummary[] }>("/replication/jobs?limit=200")).items;
        jobs.setRows(jobRows);
      } catch (error) {
        status.error(error);
      }
    };
    const [e, p] = await Promise.all([get<{ items: Endpoint[] }>("/replication/endpoints"), get<{ items: Policy[] }>("/replication/policies")]);
    endpoints.setRows(e.items);
    policies.setRows(p.items);
    await readJobs();
    for (const row of jobRows.filter((j) => !isFinal(j.state))) {
      followJob(
        row.id,
        (detail) => {
          jobRows = jobRows.map((j) => (j.id === detail.id ? summaryOf(detail) : j));
          jobs.setRows(jobRows);
        },
        status,
        signal,
      );
    }
  },
};

export const replicationJobPage: Page = {
  title: ({ id }) => `Replication job ${id}`,
  async render({ main, params, signal }) {
    const path = `/replication/jobs/${encodeURIComponent(params.id)}`;
    let job = await get<JobDetail>(path);
    const status = new Status();
    const summary = h("section", { "aria-label": "job" });
    const tasks = new DataTable<Task>({
      caption: "Tasks",
      key: (t) => String(t.index),
      pageSize: 50,
      columns: [
        { title: "#", render: (t) => t.index, sortBy: (t) => t.index, searchText: () => "" },
        { title: "Kind", render: (t) => t.kind, sortBy: (t) => t.kind },
        { title: "Artifact", render: (t) => h("span", { class: "mono" }, `${t.repository}:${t.reference}`), sortBy: (t) => `${t.repository}:${t.reference}` },
        { title: "Destination", render: (t) => h("span", { class: "mono" }, t.destination), sortBy: (t) => t.destination },
        { title: "State", render: (t) => stateBadge(t.state), sortBy: (t) => t.state },
        {
          title: "Progress",
          render: (t) => h("span", { class: "usage" }, h("progress", { max: t.bytesTotal || 1, value: t.state === "succeeded" ? t.bytesTotal || 1 : t.bytesDone, "aria-label": `task ${t.index} bytes` }), ` ${bytes(t.bytesDone)} of ${bytes(t.bytesTotal)}`),
          sortBy: (t) => t.bytesDone / (t.bytesTotal || 1),
          searchText: () => "",
        },
        { title: "Attempts", render: (t) => t.attempts, sortBy: (t) => t.attempts, searchText: () => "" },
        { title: "Message", render: (t) => t.message ?? "", searchText: (t) => t.message ?? "" },
      ],
    });
    const cancel = h(
      "button",
      {
        type: "button",
        class: "danger small",
        onclick: async () => {
          status.clear();
          try {
            await send("POST", `${path}/cancel`);
          } catch (error) {
            status.error(error);
          }
        },
      },
      "Cancel job",
    );
    const draw = () => {
      const done = job.taskList.filter((t) => isFinal(t.state)).length;
      summary.replaceChildren(
        h(
          "dl",
          { class: "pairs" },
          h("dt", null, "Policy"),
          h("dd", null, job.policy),
          h("dt", null, "State"),
          h("dd", { id: "job-state" }, stateBadge(job.state), job.error ? ` ${job.error}` : ""),
          h("dt", null, "Tasks"),
          h("dd", null, h("progress", { max: job.taskList.length || 1, value: done, "aria-label": "tasks done" }), ` ${done} of ${job.taskList.length} done`),
          h("dt", null, "Started"),
          h("dd", null, time(job.createdAt)),
          h("dt", null, "Finished"),
          h("dd", null, time(job.finishedAt)),
        ),
      );
      cancel.disabled = isFinal(job.state);
      tasks.setRows(job.taskList);
    };
    main.append(heading(`Replication job ${params.id}`, h("a", { href: href("replication") }, "replication"), cancel), status.element, summary, tasks.element);
    draw();
    if (!isFinal(job.state)) {
      followJob(
        params.id,
        (detail) => {
          job = detail;
          draw();
        },
        status,
        signal,
      );
    }
  },
};
