export * as Redis from "./Redis.js"
