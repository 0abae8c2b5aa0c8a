// Lint: neostandard (the standard style the code is written in) with its TypeScript rules, run by `npm run lint`
// and in CI. Three rules are off because the code's house style differs on purpose:
// - object-property-newline / multiline-ternary: short records and ternaries stay on one line, where they read best;
// - no-void: `void promise` marks a promise that is deliberately not awaited (its errors are handled inside);
// - no-control-regex: the terminal code strips and escapes control characters on purpose;
// - no-unmodified-loop-condition: the flagged loops wait for flags that other async code sets, which the rule cannot
//   see.
// Two are widened: `_` names a value left out on purpose (`const { a: _, ...rest }`), and a `let` read by a teardown
// closure before its one assignment stays a `let`.
import neostandard from 'neostandard'
import globals from 'globals'

export default [
  ...neostandard({ ts: true, ignores: ['node_modules/**', 'bench/results/**', '.scratch/**'] }),
  {
    rules: {
      '@stylistic/object-property-newline': 'off',
      '@stylistic/multiline-ternary': 'off',
      'no-void': ['error', { allowAsStatement: true }],
      'no-control-regex': 'off',
      'no-unmodified-loop-condition': 'off',
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }]
    }
  },
  { files: ['**/*.ts'], rules: { '@typescript-eslint/no-unused-vars': ['error', { varsIgnorePattern: '^_', argsIgnorePattern: '^_', ignoreRestSiblings: true }] } },
  // The dashboard's script runs in the browser.
  { files: ['peer/ui/**/*.js'], languageOptions: { globals: globals.browser } }
]
