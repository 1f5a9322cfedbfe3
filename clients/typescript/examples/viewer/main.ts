/**
 * A minimal log viewer on top of @buildlogs/client, with no framework.
 *
 * Open index.html?baseUrl=<server origin>&jobId=<job>[&limit=<page size>]#token=<session token>
 * (the token is read from the fragment, which browsers never send to a server). A real app would
 * pass Clerk's getToken instead of a fixed token.
 */
import {
  BuildlogsError,
  type LogLine,
  streamJobLogs,
} from "@buildlogs/client";

const params = new URLSearchParams(location.search);
const hash = new URLSearchParams(location.hash.slice(1));
const baseUrl = params.get("baseUrl") ?? "";
const jobId = params.get("jobId") ?? "";
const limit = Number(params.get("limit") ?? "100");
const token = hash.get("token");

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const list = $<HTMLOListElement>("lines");
const loadEarlier = $<HTMLButtonElement>("load-earlier");
const connection = $("connection");
const status = $("status");
const final = $("final");
const errorBox = $("error");
const notice = $("notice");
$("job").textContent = jobId;

function render(line: LogLine): HTMLLIElement {
  const li = document.createElement("li");
  li.dataset.id = line.id;
  li.className = line.source;
  li.title = line.ts;
  const phase = document.createElement("span");
  phase.className = "phase";
  phase.textContent = line.phase ? `[${line.phase}] ` : "";
  li.append(phase, document.createTextNode(line.text));
  return li;
}

function showError(error: unknown): void {
  errorBox.textContent =
    error instanceof BuildlogsError
      ? `${error.name} (${error.status}${error.code ? ` ${error.code}` : ""}): ${error.message}`
      : String(error);
}

const stream = streamJobLogs({
  baseUrl,
  jobId,
  // Clerk: getToken: () => clerk.session?.getToken() ?? Promise.resolve(null)
  getToken: async () => token,
  onStatusChange: (s) => {
    connection.textContent = s;
  },
  onStart: (data) => {
    status.textContent = data.status;
    loadEarlier.disabled = false;
  },
  onLog: (line) => {
    const stick = window.innerHeight + window.scrollY >= document.body.scrollHeight - 4;
    list.append(render(line));
    if (stick) window.scrollTo(0, document.body.scrollHeight);
  },
  onReset: (data) => {
    notice.textContent = `Some lines were trimmed away (oldest kept: ${data.oldest_id ?? "none"}).`;
  },
  onDone: (data) => {
    status.textContent = data.status;
  },
  onError: (error, info) => {
    if (info.willRetry) notice.textContent = `Connection lost (${error.message}); reconnecting in ${info.delayMs} ms`;
    else showError(error);
  },
});

stream.finished.then((end) => {
  if (end.reason === "done") {
    final.hidden = false;
    final.dataset.status = end.status;
    final.textContent = `finished: ${end.status}`;
    notice.textContent = "";
  } else if (end.reason === "ended") {
    final.hidden = false;
    final.textContent = "finished";
  } else if (end.reason === "error") {
    loadEarlier.disabled = true;
  }
});

// History above the live view: starts at the stream's `start` history_cursor (no gap, no duplicate).
const pager = stream.historyPager({ limit });
loadEarlier.addEventListener("click", async () => {
  loadEarlier.disabled = true;
  try {
    const lines = await pager.loadEarlier();
    const before = document.body.scrollHeight;
    list.prepend(...lines.map(render));
    window.scrollBy(0, document.body.scrollHeight - before); // keep the view where it was
  } catch (error) {
    showError(error);
  } finally {
    loadEarlier.disabled = !pager.hasMore;
    if (!pager.hasMore) loadEarlier.textContent = "Beginning of the log";
  }
});

// For tests and debugging.
Object.assign(window, { buildlogsStream: stream });
