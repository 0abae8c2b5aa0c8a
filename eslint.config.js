// Lint: neostandard (the standard style the code is written in) with its TypeScript rules, run by `npm run lint`
// and in CI. Three rules are off because the code's house style differs on purpose:
// - object-property-newline / multiline-ternary: short records and ternaries stay on one line, where they read best;
// - no-void: `void promise` marks a promise that is deliberately not awaited (its errors are handled inside).
import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['node_modules/**', 'bench/results/**', '.scratch/**'] }),
  {
    rules: {
      '@stylistic/object-property-newline': 'off',
      '@stylistic/multiline-ternary': 'off',
      'no-void': ['error', { allowAsStatement: true }]
    }
  }
]
