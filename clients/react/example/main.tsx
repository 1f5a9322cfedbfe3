/**
 * The example viewer that `buildlogs serve --dev` serves at `/viewer/`: `<BuildLog>` on a job
 * (`?job=<id>`, default `demo-1`). Its token comes from the dev server's `/viewer/token`, which
 * exists in dev mode only; a real app passes Clerk's `useAuth().getToken` instead.
 */
import { BuildLog } from "@buildlogs/react";
import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

interface DevToken {
  token: string;
  /** Seconds since the epoch. */
  expires_at: number;
}

let cached: DevToken | undefined;

/** Like Clerk's getToken: the cached token while it has more than 15 s left, else a fresh one. */
async function getToken(): Promise<string | null> {
  if (cached && cached.expires_at * 1000 - Date.now() > 15_000) return cached.token;
  const response = await fetch("./token", { cache: "no-store" });
  if (!response.ok) return null;
  cached = (await response.json()) as DevToken;
  return cached.token;
}

function App() {
  const params = new URLSearchParams(location.search);
  const [job, setJob] = useState(params.get("job") ?? "demo-1");
  const [draft, setDraft] = useState(job);
  return (
    <div className="app">
      <form
        onSubmit={(event) => {
          event.preventDefault();
          const next = draft.trim();
          if (!next) return;
          history.replaceState(null, "", `?job=${encodeURIComponent(next)}`);
          setJob(next);
        }}
      >
        <label htmlFor="job">Job</label>
        <input id="job" value={draft} onChange={(event) => setDraft(event.target.value)} />
        <button type="submit">Open</button>
      </form>
      <main>
        <BuildLog jobId={job} baseUrl={location.origin} getToken={getToken} />
      </main>
    </div>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
