import type { ComponentType } from "preact";
import { useEffect, useState } from "preact/hooks";
import { describeError, ErrorNote, Loading } from "./components/ui";

/**
 * A page loaded on first visit, so the catalog (the landing page) ships only its own code.
 * Preact's `lazy` lives in preact/compat, which this app otherwise does not need.
 */
export function lazyPage<P extends object>(load: () => Promise<ComponentType<P>>): ComponentType<P> {
  let loaded: ComponentType<P> | null = null;
  return function LazyPage(props: P) {
    const [component, setComponent] = useState<ComponentType<P> | null>(() => loaded);
    const [error, setError] = useState<string | null>(null);
    useEffect(() => {
      if (component) return;
      load().then(
        (c) => {
          loaded = c;
          setComponent(() => c);
        },
        (e: unknown) => setError(describeError(e)),
      );
    }, [component]);
    if (error) return <ErrorNote message={`This page could not be loaded: ${error}`} />;
    if (!component) return <Loading what="the page" />;
    const Page = component;
    return <Page {...props} />;
  };
}
