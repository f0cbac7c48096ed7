"""prefsmith's rewards inside online RL loops: a TRL reward function (:mod:`.trl`) and an HTTP
reward server (:mod:`.server`, with :mod:`.batching`, :mod:`.metrics`, :mod:`.queries`,
:mod:`.launch` and :mod:`.ray_serve`)."""
