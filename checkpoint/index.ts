// Public surface of the checkpoint layer.
export * from './errors.ts'
export * from './format.ts'
export * from './backend.ts'
export * from './bundle-store.ts'
export * from './bundle.ts'
