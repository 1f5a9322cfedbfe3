// The part of @clerk/clerk-react's types the README's examples use (the package is not a
// dependency of this one: apps bring their own Clerk).
declare module "@clerk/clerk-react" {
  export function useAuth(): {
    getToken: (options?: { template?: string }) => Promise<string | null>;
  };
}
