"""Getting data in: exporting Matomo's log tables into the lake.

The only code that talks to a Matomo database, so the pipeline can run on any lake whatever
produced it, and a failure of the source database never reaches the processed data.
"""
