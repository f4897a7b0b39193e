/** Vite loads `?raw` imports as the file text (used to publish first-party capsules in tests). */
declare module "*?raw" {
  const text: string;
  export default text;
}
