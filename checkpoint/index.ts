// Public surface of the checkpoint layer.
export * from './errors.ts'
export * from './format.ts'
export * from './backend.ts'
export * from './bundle-store.ts'
export * from './bundle.ts'
export * from './criu-stats.ts'
export * from './runtime.ts'
export * from './checkpointer.ts'
