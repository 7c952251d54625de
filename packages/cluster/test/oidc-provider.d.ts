// oidc-provider ships no type declarations; the tests use it as the provider would be used in a plain JS app.
declare module "oidc-provider" {
  const Provider: any
  export default Provider
}
