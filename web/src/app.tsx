import { useEffect, useRef, useState } from "preact/hooks";
import { currentSession, onSessionChange, type Session, signOut } from "./api";
import { lazyPage } from "./lazy";
import { CapsulePage } from "./pages/capsule";
import { CatalogPage, CollectionPage } from "./pages/catalog";
import { SignInPage } from "./pages/signin";
import { href, type Route, useRoute } from "./router";

const PublishPage = lazyPage(() => import("./pages/publish").then((m) => m.PublishPage));
const SubmissionPage = lazyPage(() => import("./pages/publish").then((m) => m.SubmissionPage));
const ReviewPage = lazyPage(() => import("./pages/review").then((m) => m.ReviewPage));
const ProjectsPage = lazyPage(() => import("./pages/projects").then((m) => m.ProjectsPage));
const LivePage = lazyPage(() => import("./pages/live").then((m) => m.LivePage));
const DashboardsPage = lazyPage(() => import("./pages/dashboards").then((m) => m.DashboardsPage));

export function useSession(): Session | null {
  const [session, setSession] = useState(currentSession);
  useEffect(() => onSessionChange(() => setSession(currentSession())), []);
  return session;
}

function page(route: Route, session: Session | null) {
  const [first, ...rest] = route.path;
  switch (first) {
    case undefined:
    case "catalog":
      return <CatalogPage query={route.query} />;
    case "capsules":
      return <CapsulePage name={rest.join("/")} query={route.query} session={session} />;
    case "collections":
      return <CollectionPage id={rest[0] ?? ""} />;
    case "signin":
      return <SignInPage query={route.query} />;
    case "publish":
      return <PublishPage session={session} query={route.query} />;
    case "submissions":
      return <SubmissionPage id={rest[0] ?? ""} session={session} />;
    case "review":
      return <ReviewPage session={session} query={route.query} />;
    case "projects":
      return rest[0] ? <LivePage id={rest[0]} session={session} /> : <ProjectsPage session={session} />;
    case "dashboards":
      return <DashboardsPage kind={rest[0] ?? "platform"} query={route.query} session={session} />;
    default:
      return (
        <section>
          <h1>Page not found</h1>
          <p>
            There is no page at this address. <a href={href("/")}>Go to the catalog</a>.
          </p>
        </section>
      );
  }
}

const NAV: { path: string; label: string; match: string[] }[] = [
  { path: "/", label: "Catalog", match: ["", "catalog", "capsules", "collections"] },
  { path: "/publish", label: "Publish", match: ["publish", "submissions"] },
  { path: "/review", label: "Review", match: ["review"] },
  { path: "/projects", label: "Projects", match: ["projects"] },
  { path: "/dashboards/platform", label: "Dashboards", match: ["dashboards"] },
];

export function App() {
  const route = useRoute();
  const session = useSession();
  const main = useRef<HTMLElement>(null);
  const key = `${route.path.join("/")}`;
  const first = useRef(true);
  useEffect(() => {
    // Moving focus to the new page tells keyboard and screen-reader users that the view changed.
    if (first.current) {
      first.current = false;
      return;
    }
    main.current?.focus();
    window.scrollTo(0, 0);
  }, [key]);
  const section = route.path[0] ?? "";
  return (
    <>
      <button type="button" class="skip" onClick={() => main.current?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <a class="brand" href={href("/")}>
          SomaAgent Edge
        </a>
        <nav aria-label="Main">
          <ul>
            {NAV.filter(
              (n) => n.path !== "/review" || session?.roles.some((r) => r === "reviewer" || r === "admin"),
            ).map((n) => (
              <li key={n.path}>
                <a href={href(n.path)} aria-current={n.match.includes(section) ? "page" : undefined}>
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          {session ? (
            <>
              <span>
                Signed in as <strong>{session.handle}</strong>
              </span>
              <button type="button" class="link" onClick={signOut}>
                Sign out
              </button>
            </>
          ) : (
            <a href={href("/signin", { next: location.hash })}>Sign in or sign up</a>
          )}
        </div>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        {page(route, session)}
      </main>
    </>
  );
}
