-- At most one open submission (waiting for review, approved or published) per name@version. Two uploads of
-- the same new version racing past the version check in submitBundle now collide here, and the loser gets a
-- 409 instead of a second approval whose publish would overwrite the winner's published objects in R2.
CREATE UNIQUE INDEX submissions_open_name_version ON submissions(name, version)
  WHERE status IN ('pending_review', 'approved', 'published');
