"""The built-in job kinds, one module each (`nfjobs.kinds` declares them). A kind uses the job contract only:
`nfjobs.context`, `nfjobs.store`, `nfjobs.data`, `nfjobs.models` and the libraries beside them, never another
kind's names."""
