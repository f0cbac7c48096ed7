"""Making preference data: sampling (:mod:`.sampling`), on-policy pairs (:mod:`.pairs`) and
RMBoost (:mod:`.rmboost`)."""
