;; Imports an interface this host does not provide.
(component (import "fermyon:spin/llm@2.0.0" (instance (export "infer" (func)))))
