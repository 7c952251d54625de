// Tests read many JSON bodies; in them a body is whatever the server sent.
declare global {
  interface Response {
    json(): Promise<any>
  }
}
export {}
